"""``seckill serve --processes N``: N spawned gateway processes on one port.

Each child runs :func:`seckill.process.worker.run_app` and shares the port
through SO_REUSEPORT; a child that dies is restarted (up to ``MAX_RESTARTS``
within ``RESTART_WINDOW``); children die with the supervisor
(PR_SET_PDEATHSIG). SIGTERM/SIGINT: every child drains and exits, then the
supervisor returns.
"""

from __future__ import annotations

import contextlib
import faulthandler
import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvloop

from seckill.process.embedded import ServerState
from seckill.process.procs import die_with_parent
from seckill.process.worker import (
    SHUTDOWN_TIMEOUT,
    ServeError,
    configure_logging,
    run_app,
)
from seckill.settings import Settings

log = logging.getLogger("seckill.server")

#: seconds for a child to come up.
START_TIMEOUT = 45.0
#: a child that dies this many times within RESTART_WINDOW seconds is not restarted.
MAX_RESTARTS, RESTART_WINDOW = 5, 60.0


def _worker_main(
    settings: Settings,
    redis_url: str,
    admin_token: str,
    index: int,
    report: multiprocessing.Queue[Any],
    parent: int,
    server_state: ServerState | None,
) -> None:
    """Entry point of a spawned gateway child."""
    die_with_parent(parent)
    configure_logging(settings.log_level, settings.log_format)
    # SIGUSR1 prints every thread's stack to stderr (the log): the supervisor
    # sends it to a child that is not ready in time, so the log says where it hangs
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    try:
        uvloop.run(
            run_app(
                settings,
                redis_url,
                admin_token,
                lambda: report.put(("ready", index)),
                index,
                server_state,
            )
        )
    except Exception as exc:
        report.put(("error", index, str(exc)))
        sys.exit(2)


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        redis_url: str,
        admin_token: str,
        server_state: ServerState | None = None,
    ) -> None:
        self.settings, self.redis_url, self.admin_token = settings, redis_url, admin_token
        #: the embedded server's state, shared with every child (None: external Redis)
        self.server_state = server_state
        self.ctx = multiprocessing.get_context("spawn")
        self.report: multiprocessing.Queue[Any] = self.ctx.Queue()
        self.children: dict[int, multiprocessing.process.BaseProcess] = {}
        self.deaths: list[float] = []
        self.stopping = False

    def _spawn(self, index: int) -> None:
        proc = self.ctx.Process(
            target=_worker_main,
            args=(
                self.settings,
                self.redis_url,
                self.admin_token,
                index,
                self.report,
                os.getpid(),
                self.server_state,
            ),
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
                late = [i for i in self.children if i not in ready]
                for index in late:
                    pid = self.children[index].pid
                    if pid is not None:
                        with contextlib.suppress(OSError):
                            os.kill(pid, signal.SIGUSR1)
                time.sleep(0.5)  # let them write their stacks
                raise ServeError(
                    f"gateway process(es) {late} not ready after {START_TIMEOUT:.0f}s"
                    " (their stacks are in the log above)"
                )
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
