"""One gateway process: the app on its port until SIGTERM/SIGINT.

``run_app`` is what ``seckill serve`` runs in its own process (N = 1) or in
each spawned child (N > 1, see :mod:`seckill.process.supervisor`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import resource
import signal
from collections.abc import Callable
from typing import Any

from aiohttp import web

from seckill.http.app import create_app
from seckill.http.state import SERVER_PROBLEM
from seckill.pipeline.sinks import SinkError
from seckill.process import logs
from seckill.process.connections import ConnectionGuard, GuardedSite
from seckill.process.embedded import ServerState
from seckill.settings import Settings

log = logging.getLogger("seckill.server")

#: seconds to answer in-flight requests after a stop signal.
SHUTDOWN_TIMEOUT = 10.0


class ServeError(RuntimeError):
    """The gateway cannot start; the message is one line for the operator."""


def configure_logging(level: str, fmt: str = "text") -> None:
    """--log-format *fmt* at *level* (see :mod:`seckill.process.logs`)."""
    logs.configure_logging(level, fmt)


def freeze_startup_objects() -> None:
    """Keep what startup allocated (modules, the app, its clients) out of every
    later garbage collection.

    Why: a full (gen 2) collection walks every tracked object, and a started
    worker holds a few hundred thousand of them, almost all from imports.
    Under load that walk ran a few times a second, tens of milliseconds each
    time, and every request of the process waited behind it (the p99 it cost
    is in docs/performance.md). Collections still run, over what was
    allocated later.
    """
    gc.collect()
    gc.freeze()


def connection_cap(settings: Settings) -> int:
    """--max-connections, lowered to what the open-files limit leaves room for
    (past it accept() fails with EMFILE and nobody gets an answer)."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return settings.max_connections
    # Redis pool, auto-pipeline, listener, sink, log and metrics files, the refusals
    room = soft - settings.redis_pool_size - settings.order_workers - 256
    cap = max(16, min(settings.max_connections, room))
    if cap < settings.max_connections:
        log.warning(
            "--max-connections %d lowered to %d: the open-files limit is %d",
            settings.max_connections,
            cap,
            soft,
        )
    return cap


async def run_app(
    settings: Settings,
    redis_url: str,
    admin_token: str,
    ready: Callable[[], None],
    process_index: int = 0,
    server_state: ServerState | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, then shut down gracefully."""
    app = create_app(settings, redis_url, admin_token, process_index)
    if server_state is not None:
        app[SERVER_PROBLEM] = server_state.problem
    handler_kwargs: dict[str, Any] = {
        "access_log": None,
        "keepalive_timeout": settings.keepalive_timeout,
    }
    runner = web.AppRunner(
        app, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT, **handler_kwargs
    )
    try:
        await runner.setup()
    except SinkError as exc:
        await runner.cleanup()
        raise ServeError(f"order sink unusable: {exc}") from None
    unwatch: Callable[[], None] | None = None
    try:
        assert runner.server is not None
        guard = ConnectionGuard(
            runner.server, handler_kwargs, settings.head_timeout, connection_cap(settings)
        )
        site = GuardedSite(runner, guard, settings.host, settings.port, backlog=4096)
        from seckill.process import gauges  # prometheus_client: after serve set its dir

        unwatch = gauges.watch(guard, server_state)
        try:
            await site.start()
        except OSError as exc:
            raise ServeError(
                f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}"
            ) from None
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        freeze_startup_objects()
        ready()
        await stop.wait()
        log.info("stopping: answering in-flight requests")
    finally:
        await runner.cleanup()
        if unwatch is not None:
            unwatch()
