"""Running the gateway: one process, or a supervisor of N on one port.

``serve`` checks the port, starts the embedded server (or checks the
external one), then runs the app in this process (N = 1) or in N spawned
children that share the port through SO_REUSEPORT. SIGTERM/SIGINT: each
process stops accepting, answers what is in flight, and exits; the embedded
server is stopped last. Children die with the supervisor (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import secrets
import signal
import socket
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import uvloop
from aiohttp import web

from seckill.app import create_app
from seckill.embedded import EmbeddedRedis, die_with_parent
from seckill.settings import Settings
from seckill.sinks import SinkError

log = logging.getLogger("seckill.server")

#: seconds to answer in-flight requests after a stop signal.
SHUTDOWN_TIMEOUT = 10.0
#: seconds for a child to come up.
START_TIMEOUT = 60.0
#: a child that dies this many times within RESTART_WINDOW seconds is not restarted.
MAX_RESTARTS, RESTART_WINDOW = 5, 60.0


class ServeError(RuntimeError):
    """The gateway cannot start; the message is one line for the operator."""


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s",
        force=True,
    )


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def check_port_free(host: str, port: int) -> None:
    """Bind once with SO_REUSEADDR only: a port held by anyone (even with
    SO_REUSEPORT) fails here, while leftover TIME_WAIT sockets do not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServeError(f"cannot resolve --host {host!r}: {exc.strerror}") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as exc:
            raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def check_redis(url: str, timeout: float) -> None:
    """Exit early when Redis does not answer; warn when it would lose orders."""
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        client.ping()
        try:
            aof = str(next(iter(client.config_get("appendonly").values()), ""))
        except redis.ResponseError:  # CONFIG disabled (managed Redis): cannot tell
            aof = ""
        if aof in ("no", "b'no'"):
            log.warning(
                "Redis at %s runs without AOF (appendonly no): a Redis restart loses the "
                "orders admitted since its last snapshot",
                redact(url),
            )
    except (redis.RedisError, OSError) as exc:
        raise ServeError(f"cannot reach Redis at {redact(url)}: {exc}") from None
    finally:
        client.close()


def log_settings(settings: Settings, redis_url: str, generated_token: bool) -> None:
    """One line with the effective configuration, secrets masked."""
    shown = {
        **{k: v for k, v in vars(settings).items() if k not in ("admin_token", "jwt_secret")},
        "data_dir": str(settings.data_dir),
        "redis_url": redact(redis_url),
        "order_sink": redact(settings.sink_url),
        "admin_token": "generated" if generated_token else "***",
        "jwt_secret": "***" if settings.jwt_secret else None,
    }
    log.info("config %s", " ".join(f"{k}={v}" for k, v in sorted(shown.items())))


def freeze_startup_objects() -> None:
    """Keep what startup allocated (modules, the app, its clients) out of every
    later garbage collection.

    Why: a full (gen 2) collection walks every tracked object, and a started
    worker holds a few hundred thousand of them, almost all from imports. Under
    load that walk ran a few times a second and took 23-29 ms each time, every
    request of the process waiting behind it: measured, ``admit`` at 256
    connections went from p99 41 ms to 29 ms and from 19.1k to 20.7k req/s
    with this call. Collections still run, over what was allocated later.
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


def _worker_main(
    settings: Settings,
    redis_url: str,
    admin_token: str,
    index: int,
    report: multiprocessing.Queue[Any],
    parent: int,
) -> None:
    """Entry point of a spawned gateway child."""
    die_with_parent(parent)
    configure_logging(settings.log_level)
    try:
        uvloop.run(
            run_app(settings, redis_url, admin_token, lambda: report.put(("ready", index)), index)
        )
    except Exception as exc:
        report.put(("error", index, str(exc)))
        sys.exit(2)


class _Supervisor:
    def __init__(self, settings: Settings, redis_url: str, admin_token: str) -> None:
        self.settings, self.redis_url, self.admin_token = settings, redis_url, admin_token
        self.ctx = multiprocessing.get_context("spawn")
        self.report: multiprocessing.Queue[Any] = self.ctx.Queue()
        self.children: dict[int, multiprocessing.process.BaseProcess] = {}
        self.deaths: list[float] = []
        self.stopping = False

    def _spawn(self, index: int) -> None:
        proc = self.ctx.Process(
            target=_worker_main,
            args=(self.settings, self.redis_url, self.admin_token, index, self.report, os.getpid()),
            name=f"seckill-{index}",
            daemon=False,
        )
        proc.start()
        self.children[index] = proc

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def run(self, announce: Callable[[], None]) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            for index in range(self.settings.processes):
                self._spawn(index)
            self._wait_ready()
            announce()
            self._watch()
        finally:
            self._stop_children()

    def _wait_ready(self) -> None:
        ready: set[int] = set()
        deadline = time.monotonic() + START_TIMEOUT
        while len(ready) < len(self.children) and not self.stopping:
            if time.monotonic() > deadline:
                raise ServeError(f"gateway processes not ready after {START_TIMEOUT:.0f}s")
            try:
                msg = self.report.get(timeout=0.2)
            except queue.Empty:
                dead = [p for p in self.children.values() if p.exitcode is not None]
                if not dead:
                    continue
                try:  # its last words may still be on the way
                    msg = self.report.get(timeout=1.0)
                except queue.Empty:
                    raise ServeError(
                        f"a gateway process exited while starting (code {dead[0].exitcode})"
                    ) from None
            if msg[0] == "error":
                raise ServeError(msg[2])
            ready.add(msg[1])

    def _watch(self) -> None:
        while not self.stopping:
            sentinels = {p.sentinel: i for i, p in self.children.items()}
            done = multiprocessing.connection.wait(list(sentinels), timeout=0.5)
            if self.stopping:
                return
            for sentinel in done:
                index = sentinels[sentinel]  # type: ignore[index]
                code = self.children[index].exitcode
                now = time.monotonic()
                self.deaths = [t for t in self.deaths if now - t < RESTART_WINDOW] + [now]
                if len(self.deaths) > MAX_RESTARTS:
                    raise ServeError(
                        f"gateway processes keep dying (last exit code {code}); giving up"
                    )
                log.error("gateway process %d exited with code %s; restarting it", index, code)
                _forget_metrics_of(self.children[index].pid)
                self._spawn(index)

    def _stop_children(self) -> None:
        for proc in self.children.values():
            if proc.exitcode is None and proc.pid is not None:
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + SHUTDOWN_TIMEOUT + 5
        for proc in self.children.values():
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.exitcode is None:
                log.warning("gateway process %s did not stop; killing it", proc.pid)
                proc.kill()
                proc.join()


def _forget_metrics_of(pid: int | None) -> None:
    """A dead child's live gauges (busy workers, queue depth) must not count."""
    if pid is not None and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def serve(settings: Settings, out: Callable[[str], None]) -> None:
    """Run the gateway until a stop signal. Raises ServeError/EmbeddedError on bad starts."""
    check_port_free(settings.host, settings.port)
    embedded: EmbeddedRedis | None = None
    if settings.redis_url is None:
        embedded = EmbeddedRedis(settings.data_dir, settings.redis_server)
        redis_url = embedded.start()
    else:
        redis_url = settings.redis_url
    try:
        check_redis(redis_url, settings.redis_timeout)
        admin_token = settings.admin_token
        if admin_token is None:
            admin_token = secrets.token_urlsafe(24)
            out(f"seckill: generated admin token (shown once): {admin_token}")
            log.warning("no SECKILL_ADMIN_TOKEN set: a new admin token is generated at every start")
        log_settings(settings, redis_url, settings.admin_token is None)
        if settings.auth == "header":
            log.warning(
                "--auth header: the X-User-Id header is trusted as the customer's identity; "
                "run this only behind an edge that authenticates customers and sets it"
            )

        def announce() -> None:
            out(
                f"seckill: serving on http://{settings.host}:{settings.port} "
                f"({settings.processes} process(es), Redis at {redact(redis_url)})"
            )

        if settings.processes == 1:
            uvloop.run(run_app(settings, redis_url, admin_token, announce))
        else:
            _Supervisor(settings, redis_url, admin_token).run(announce)
        log.info("stopped")
    finally:
        if embedded is not None:
            embedded.stop()
