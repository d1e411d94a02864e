"""The two servers a run measures, started through the project's one launcher
(``seckill.tools.launcher``): the yardstick, ``python -m loadtest.bare``, and
the gateway, ``seckill serve``.

Both run in their own session, die with the benchmark, write to a log file
under the benchmark's temporary directory and are stopped with SIGTERM, then
SIGKILL of the whole group: the launcher's rules. What the benchmark adds is
a name for the figures, the process count it asked for (checked once the
server is ready: a yardstick or gateway short of a process would measure
something else) and a :class:`~loadtest.bench.sampling.ProcessSampler` on
the launched group.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

from loadtest.bench import ROOT
from loadtest.bench.client import http_status
from loadtest.bench.console import BenchError
from loadtest.bench.sampling import ProcessSampler
from seckill.process.procs import free_port
from seckill.tools.launcher import (
    HOST,
    START_TIMEOUT,
    ChildProcess,
    GatewayProcess,
    LaunchError,
    gateway_env,
)

C = TypeVar("C", bound=ChildProcess)


@dataclasses.dataclass
class Server(Generic[C]):
    """A launched server under measurement, ready when *ready* holds."""

    name: str
    processes: int
    port: int
    child: C
    ready: Callable[[], bool]
    #: what *ready* waits for, for the error when it never holds
    ready_what: str
    sampler: ProcessSampler = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.sampler = ProcessSampler(self.child.pid, self.processes)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def log_tail(self) -> str:
        return self.child.tail()

    def wait_ready(self) -> None:
        """Until it is ready with as many serving processes as asked for."""
        try:
            self.child.wait_until(self.ready, START_TIMEOUT, self.ready_what)
        except LaunchError as exc:
            raise BenchError(str(exc)) from None
        roles = self.sampler.pids()
        if len(roles.get("worker", [])) != self.processes:
            raise BenchError(
                f"{self.name}: expected {self.processes} serving process(es), found {roles}"
            )

    def stop(self) -> int | None:
        """SIGTERM (it stops its own children), wait, then SIGKILL the group;
        its exit code (None: it had to be killed). A last snapshot first, for
        the peak RSS of every process."""
        with contextlib.suppress(Exception):
            self.sampler.snapshot()
        return self.child.stop()


def start_bare(name: str, processes: int, log_path: Path) -> Server[ChildProcess]:
    """The yardstick; ready when ``/healthz`` answers 200."""
    port = free_port(HOST)
    argv = [sys.executable, "-m", "loadtest.bare", "--port", str(port)]
    child = ChildProcess(
        [*argv, "--processes", str(processes)],
        env=gateway_env(),
        name=name,
        log_path=log_path,
        cwd=ROOT,
    )
    url = f"http://{HOST}:{port}/healthz"
    return Server(name, processes, port, child, lambda: http_status("GET", url) == 200, url)


def start_gateway(
    name: str, processes: int, data_dir: Path, log_path: Path, *flags: str
) -> Server[GatewayProcess]:
    """``seckill serve`` on a fresh *data_dir* (embedded Valkey, SQLite sink),
    with ``--max-backlog 0`` (no bound: admit queues orders faster than the
    sink writes them, and 503 ``overloaded`` would be measured instead); ready
    when ``/readyz`` answers 200 and its "serving on" line is out. *flags*
    go after these (the shard scenario: ``--redis-url``, ``--role``)."""
    gateway = GatewayProcess(
        "--processes", str(processes), "--data-dir", str(data_dir), "--max-backlog", "0",
        *flags, name=name, log_path=log_path, cwd=ROOT,
    )  # fmt: skip
    return Server(
        name, processes, gateway.port, gateway, gateway.serving, "readiness (/readyz 200)"
    )
