"""Driving ``wrk``: one run against 127.0.0.1 with ``loadtest/wrk/buy.lua``,
and the figures it reports.

buy.lua's ``done()`` prints one ``WRK_JSON {...}`` line (requests, duration,
latency percentiles, errors) so nothing here parses wrk's human summary. The
CPU time wrk used is read from this process's children's rusage around the
run: wrk shares the machine with the server, and the report says how much
of it wrk took.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import shutil
import subprocess
from pathlib import Path

from loadtest.bench.console import BenchError

BUY_LUA = Path(__file__).resolve().parents[1] / "wrk" / "buy.lua"
HOST = "127.0.0.1"
THREADS = 2
#: wrk's per-request timeout; a request slower than this is an error.
WRK_TIMEOUT = "2s"


@dataclasses.dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    latency_us: dict[str, float]
    #: wrk's socket errors (connect, read, write, timeout) and ``status``:
    #: answers that were not 2xx/3xx.
    errors: dict[str, int]

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def socket_errors(self) -> int:
        return sum(self.errors[k] for k in ("connect", "read", "write", "timeout"))

    @property
    def non2xx(self) -> int:
        return self.errors["status"]

    @property
    def ok(self) -> int:
        """Answers that were 2xx/3xx."""
        return max(0, self.requests - self.non2xx)

    def ms(self, name: str) -> float:
        return self.latency_us[name] / 1000.0


def parse_wrk_output(text: str) -> WrkResult:
    """The ``WRK_JSON {...}`` line that buy.lua's ``done()`` prints."""
    for line in text.splitlines():
        if line.startswith("WRK_JSON "):
            data = json.loads(line[len("WRK_JSON ") :])
            return WrkResult(
                requests=int(data["requests"]),
                duration_s=int(data["duration_us"]) / 1e6,
                latency_us={k: float(v) for k, v in data["latency_us"].items()},
                errors={k: int(v) for k, v in data["errors"].items()},
            )
    raise BenchError("wrk printed no WRK_JSON line: " + " / ".join(text.strip().splitlines()[-3:]))


def wrk_binary() -> str:
    """wrk's path; BenchError when it is not on PATH (``make bench`` installs it)."""
    path = shutil.which("wrk")
    if path is None:
        raise BenchError("wrk is not installed (make bench installs it: apt-get install -y wrk)")
    return path


def run_wrk(
    wrk: str,
    port: int,
    path: str,
    connections: int,
    seconds: int,
    prefix: str,
    users: int = 0,
) -> tuple[WrkResult, float]:
    """One wrk run against 127.0.0.1; the result and the CPU seconds wrk used.

    buy.lua's arguments: the path to POST, the user population (0: every
    request a new user), the thread count and a user id prefix of its own,
    so no two runs buy as the same user.
    """
    argv = [
        wrk,
        f"-t{THREADS}",
        f"-c{connections}",
        f"-d{seconds}s",
        f"--timeout={WRK_TIMEOUT}",
        "--latency",
        "-s",
        str(BUY_LUA),
        f"http://{HOST}:{port}",
        "--",
        path,
        str(users),
        str(THREADS),
        prefix,
    ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=seconds + 30, check=False
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish within {seconds + 30}s") from None
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise BenchError(f"wrk exited {done.returncode}: {done.stderr.strip()[:300]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return parse_wrk_output(done.stdout), cpu
