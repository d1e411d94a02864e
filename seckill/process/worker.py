"""One gateway process: the app on its port until SIGTERM/SIGINT.

``run_app`` is what ``seckill serve`` runs in its own process (N = 1) or in
each spawned child (N > 1, see :mod:`seckill.process.supervisor`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Callable

from aiohttp import web

from seckill.http.app import create_app
from seckill.pipeline.sinks import SinkError
from seckill.settings import Settings

log = logging.getLogger("seckill.server")

#: seconds to answer in-flight requests after a stop signal.
SHUTDOWN_TIMEOUT = 10.0


class ServeError(RuntimeError):
    """The gateway cannot start; the message is one line for the operator."""


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s",
        force=True,
    )


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


async def run_app(
    settings: Settings,
    redis_url: str,
    admin_token: str,
    ready: Callable[[], None],
    process_index: int = 0,
) -> None:
    """Serve until SIGTERM/SIGINT, then shut down gracefully."""
    app = create_app(settings, redis_url, admin_token, process_index)
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT
    )
    try:
        await runner.setup()
    except SinkError as exc:
        await runner.cleanup()
        raise ServeError(f"order sink unusable: {exc}") from None
    try:
        site = web.TCPSite(runner, settings.host, settings.port, reuse_port=True, backlog=4096)
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
