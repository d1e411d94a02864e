"""The throughput/latency benchmark behind ``make bench`` (docs/API.md §8).

    python -m loadtest.bench [--scenarios bare,admit,...] [--processes 1,2]
        [--connections 64,256] [--duration S] [--warmup S] [--out-dir DIR]

It starts what it measures, on 127.0.0.1 only: for each process count P, the
yardstick (``python -m loadtest.bare --processes P``), then ``seckill serve
--processes P`` with an embedded Valkey on a fresh data dir and
``--max-backlog 0``. Each scenario is driven by ``wrk`` (``-t2``, the Lua
script ``loadtest/wrk/buy.lua`` gives every request its own ``X-User-Id``)
for a warm-up that is not recorded, then for a fixed duration:

- ``bare``         the yardstick's 202; always measured, the ratios need it
- ``admit``        a sale whose stock never runs out, every buy a new user: 202
- ``sold_out``     a sold-out sale, after the warm-up set every process's
                   local sold-out flag: 409 without Redis
- ``rate_limited`` its own sale with the limits at rate 1/s, burst 1: 429,
                   mostly from the local shield (limits are reset afterwards)
- ``mixed_spike``  a real sale: a fresh sale with 10,000 units, a crowd of
                   200,000 users, no warm-up; records when it sold out and
                   when the order backlog was drained

at every connection count C. sold_out, rate_limited and mixed_spike share
one gateway; every admit run gets a fresh one, since the orders it admits
faster than the sink writes them would load whatever ran next. Per run it
records, besides wrk's figures, RSS and CPU time of every process it started
(CPU µs per request by role: gateway worker, Valkey, wrk) and the CPU other
processes on the machine took meanwhile (``other_cores``: the noise). It
ends with one line per measurement:

    bench <scenario>-<P>p-c<C> rps=<n> p50_ms=<x> p99_ms=<y> ratio_to_bare=<r>

(``ratio_to_bare`` divides by ``bare`` at the same P and C, measured in the
same run), then a table, and writes every figure (errors, statuses, RSS and
CPU per process, the machine) to ``<out-dir>/bench-<UTC time>.json`` and
``<out-dir>/latest.json`` (default ``var/bench``), and a Markdown table for
the README to ``<out-dir>/latest.md``.

``BENCH_DURATION`` (whole seconds, default 10) sets the measured time;
``BENCH_QUICK=1`` is a smoke run (1 s runs, 1 s warm-ups). Errors: socket
errors and timeouts always; for ``admit`` every non-2xx answer too (nothing
but 202 is expected); for the others wrk's non-2xx counter mixes the
expected 409/429 with any 5xx, so the harness also counts 5xx from the
gateway's ``/metrics`` when it has one, probes a few buys after each run and
compares the 202s wrk saw with the units the sale sold. wrk has no
``response()`` callback here on purpose: it makes wrk parse every answer in
Lua (about 10% fewer requests/s on the yardstick here, with wrk and the
server sharing the CPU).

Exit 0 when every measurement ran (problems found in the answers are listed
as warnings and in the JSON), 2 when ``wrk`` is missing or something it
started failed (one line on stderr). Everything it started is stopped, also
on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import IO, Any, NoReturn

from seckill.process.procs import children_of

ROOT = Path(__file__).resolve().parent.parent
BUY_LUA = Path(__file__).resolve().parent / "wrk" / "buy.lua"
HOST = "127.0.0.1"

SCENARIOS = ("bare", "admit", "sold_out", "rate_limited", "mixed_spike")
LINE_RE = re.compile(
    r"^bench (bare|admit|sold_out|rate_limited|mixed_spike)-[12]p-c(64|256) "
    r"rps=\d+ p50_ms=[\d.]+ p99_ms=[\d.]+ ratio_to_bare=[\d.]+$"
)

THREADS = 2
#: wrk's per-request timeout; a request slower than this is an error.
WRK_TIMEOUT = "2s"
SPIKE_STOCK = 10_000
SPIKE_USERS = 200_000
#: the rate_limited scenario's limits (docs/API.md §5), far below any offered load.
LIMITED = {"rate": 1, "burst": 1}
UNLIMITED = {"rate": None, "burst": 1, "per_user_rate": None, "per_user_burst": 1}
#: seconds for the limits to reach every process (docs/API.md §5: within 1 s).
LIMITS_PROPAGATION = 1.2
#: /metrics is current within 1 s (docs/API.md §4).
METRICS_LAG = 1.1
START_TIMEOUT = 60.0
#: buys sent with urllib after each gateway run, to see what it answers.
PROBES = 5


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message is one line for the operator."""


def fail(message: str) -> NoReturn:
    print(f"bench: error: {message}", file=sys.stderr)
    sys.exit(2)


def warn(problems: list[str], message: str) -> None:
    problems.append(message)
    print(f"bench: warning: {message}", file=sys.stderr, flush=True)


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------- wrk


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
    path = shutil.which("wrk")
    if path is None:
        fail("wrk is not installed (make bench installs it: apt-get install -y wrk)")
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
    """One wrk run against 127.0.0.1; the result and the CPU seconds wrk used."""
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


# ------------------------------------------------------------ /proc reading

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of *pid* in kB ({} if it is gone)."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0])
    return out


def _cpu_seconds(pid: int) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime + stime


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


# ---------------------------------------------------------------- services


class Service:
    """A server this benchmark started, in its own session (process group)."""

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], log_path: Path, processes: int
    ) -> None:
        self.name, self.processes, self.log_path = name, processes, log_path
        self._log: IO[bytes] = log_path.open("wb")
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        #: pid → highest VmHWM seen (kB), and its role.
        self.peak_kb: dict[int, int] = {}
        self.roles: dict[int, str] = {}

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " / ".join(text[-lines:])

    def wait_ready(self, url: str, log_line: str | None = None) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"{self.name} exited {self.proc.returncode} while starting: {self.log_tail()}"
                )
            if (log_line is None or log_line in self.log_path.read_text(errors="replace")) and (
                http_status("GET", url) == 200
            ):
                break
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} not ready after {START_TIMEOUT:.0f}s")
            time.sleep(0.1)
        workers = self.pids()
        if len(workers.get("worker", [])) != self.processes:
            raise BenchError(
                f"{self.name}: expected {self.processes} serving process(es), found {workers}"
            )

    def pids(self) -> dict[str, list[int]]:
        """Its processes by role: ``worker`` (serving HTTP), ``supervisor``, ``redis``."""
        top = self.proc.pid
        if self.processes == 1:
            roles: dict[str, list[int]] = {"worker": [top]}
        else:
            roles = {"supervisor": [top], "worker": []}
        for kid in children_of(top):
            cmd = _cmdline(kid)
            if "resource_tracker" in cmd:
                continue
            if "multiprocessing" in cmd or "spawn_main" in cmd:
                roles["worker"].append(kid)
            elif cmd:
                roles.setdefault("redis", []).append(kid)
        return roles

    def snapshot(self) -> list[dict[str, Any]]:
        """RSS, peak RSS and CPU seconds of each of its processes, now."""
        rows = []
        for role, pids in self.pids().items():
            for pid in pids:
                st = _status(pid)
                if not st:
                    continue
                self.roles[pid] = role
                hwm = st.get("VmHWM", 0)
                self.peak_kb[pid] = max(self.peak_kb.get(pid, 0), hwm)
                rows.append(
                    {
                        "pid": pid,
                        "role": role,
                        "rss_kb": st.get("VmRSS", 0),
                        "hwm_kb": hwm,
                        "cpu_s": _cpu_seconds(pid),
                    }
                )
        return rows

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (it stops its own children), wait, then SIGKILL the group."""
        with contextlib.suppress(Exception):
            self.snapshot()  # the last VmHWM of every process
        code = None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = self.proc.wait(timeout)
        else:
            code = self.proc.returncode
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self._log.close()
        return code


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def clean_env() -> dict[str, str]:
    """This environment without SECKILL_* (a stray SECKILL_REDIS_URL would
    change what is measured), unbuffered so the logs are current."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECKILL_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


# -------------------------------------------------------------------- HTTP


def http(
    method: str,
    url: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, Any]:
    """(status, parsed JSON body or text); status 0 when nothing answered."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except OSError:
        return 0, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def http_status(method: str, url: str) -> int:
    return http(method, url, timeout=1.0)[0]


class Admin:
    def __init__(self, base: str, token: str) -> None:
        self.base, self.headers = base, {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, body: Any = None, expect: tuple[int, ...] = ()) -> Any:
        status, data = http(method, self.base + path, body, self.headers)
        if expect and status not in expect:
            raise BenchError(f"{method} {path} answered {status}: {data}")
        return data

    def put_sale(self, sale: str, stock: int) -> None:
        self.call("PUT", f"/admin/v1/sales/{sale}", {"stock": stock}, expect=(200, 201))

    def sale(self, sale: str) -> dict[str, Any]:
        data: dict[str, Any] = self.call("GET", f"/admin/v1/sales/{sale}", expect=(200,))
        return data

    def sold(self, sale: str) -> int:
        view = self.sale(sale)
        return int(view["stock_total"]) - int(view["stock_left"])

    def limits(self, body: dict[str, Any]) -> None:
        self.call("PUT", "/admin/v1/limits", body, expect=(200,))


_METRIC_RE = re.compile(r'^seckill_buy_requests_total\{[^}]*outcome="([a-z_]+)"[^}]*\}\s+(\S+)')


def buy_outcomes(base: str) -> dict[str, float] | None:
    """``seckill_buy_requests_total`` by outcome from /metrics, None without one."""
    status, text = http("GET", base + "/metrics")
    if status != 200 or not isinstance(text, str):
        return None
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _METRIC_RE.match(line)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(2))
    return out


def probe(base: str, sale: str, prefix: str) -> dict[str, int]:
    """A few buys by new users: ``{"<status> <error code>": count}``."""
    seen: Counter[str] = Counter()
    for i in range(PROBES):
        status, body = http(
            "POST", f"{base}/api/v1/sales/{sale}/orders", headers={"X-User-Id": f"{prefix}{i}"}
        )
        code = body.get("error", "") if isinstance(body, dict) else ""
        seen[f"{status} {code}".strip()] += 1
    return dict(seen)


# --------------------------------------------------------------- measuring


@dataclasses.dataclass
class Options:
    scenarios: tuple[str, ...]
    processes: tuple[int, ...]
    connections: tuple[int, ...]
    duration: int
    warmup: int
    out_dir: Path
    quick: bool
    drain_timeout: float


@dataclasses.dataclass
class Measurement:
    scenario: str
    processes: int
    connections: int
    wrk: WrkResult
    wrk_cpu_s: float
    rss_start: list[dict[str, Any]]
    rss_end: list[dict[str, Any]]
    errors: dict[str, Any]
    extra: dict[str, Any]
    loadavg: float
    #: the Service it ran against
    service: str = ""
    ratio_to_bare: float = 0.0
    #: CPU cores busy with processes this benchmark did not start (other
    #: work on the machine: the noise in the figures), over the measured run.
    other_cores: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.scenario}-{self.processes}p-c{self.connections}"

    def line(self) -> str:
        return (
            f"bench {self.key} rps={round(self.wrk.rps)} p50_ms={self.wrk.ms('p50'):.2f} "
            f"p99_ms={self.wrk.ms('p99'):.2f} ratio_to_bare={self.ratio_to_bare:.2f}"
        )

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds by role (worker, supervisor, redis, wrk) over the measured run."""
        start = {row["pid"]: row for row in self.rss_start}
        spent: dict[str, float] = {}
        for row in self.rss_end:
            first = start.get(row["pid"])
            if first is None or row["cpu_s"] is None or first["cpu_s"] is None:
                continue
            spent[row["role"]] = spent.get(row["role"], 0.0) + row["cpu_s"] - first["cpu_s"]
        spent["wrk"] = self.wrk_cpu_s
        return spent

    def cpu_us_per_request(self) -> dict[str, float]:
        """CPU µs per request, by role, over the measured run (warm-up excluded)."""
        n = max(1, self.wrk.requests)
        return {role: round(sec * 1e6 / n, 1) for role, sec in self.cpu_seconds().items()}

    def as_json(self) -> dict[str, Any]:
        w = self.wrk
        return {
            "key": self.key,
            "line": self.line(),
            "scenario": self.scenario,
            "processes": self.processes,
            "connections": self.connections,
            "service": self.service,
            "requests": w.requests,
            "duration_s": round(w.duration_s, 3),
            "rps": round(w.rps, 1),
            "latency_ms": {k: round(v / 1000.0, 3) for k, v in w.latency_us.items()},
            "ratio_to_bare": round(self.ratio_to_bare, 3),
            "wrk_errors": w.errors,
            "non2xx": w.non2xx,
            "errors": self.errors,
            "cpu_us_per_request": self.cpu_us_per_request(),
            "cpu_s": {k: round(v, 3) for k, v in self.cpu_seconds().items()},
            "other_cores": round(self.other_cores, 2),
            "rss_start": self.rss_start,
            "rss_end": self.rss_end,
            "loadavg_1m_before": self.loadavg,
            **self.extra,
        }


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def machine_busy_s() -> float:
    """CPU seconds all CPUs spent not idle since boot (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system idle iowait irq softirq steal (guest is counted in user)
    return (sum(fields[:8]) - fields[3] - fields[4]) / _CLK_TCK


def _own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Bench:
    def __init__(self, opts: Options, wrk: str) -> None:
        self.opts, self.wrk = opts, wrk
        self.results: list[Measurement] = []
        self.services: dict[str, dict[str, Any]] = {}
        self.problems: list[str] = []
        self.live: list[Service] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="seckill-bench-"))
        self.run_id = secrets.token_hex(3)

    # ---- lifecycle

    def close(self) -> None:
        for svc in reversed(self.live):
            svc.stop()
        self.live.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _start(self, svc: Service) -> Service:
        self.live.append(svc)
        return svc

    def _stop(self, svc: Service) -> None:
        code = svc.stop()
        self.live.remove(svc)
        if code not in (0, -signal.SIGTERM):
            warn(self.problems, f"{svc.name} exited {code} on SIGTERM: {svc.log_tail()}")
        self.services[svc.name] = {
            "processes": svc.processes,
            "peak_rss_kb": [
                {"pid": pid, "role": svc.roles.get(pid, "?"), "hwm_kb": kb}
                for pid, kb in sorted(svc.peak_kb.items())
            ],
            "exit_code": code,
        }

    # ---- one measurement

    def measure(
        self,
        scenario: str,
        svc: Service,
        port: int,
        connections: int,
        path: str,
        *,
        warmup: bool = True,
        users: int = 0,
        during: Callable[[], Iterator[dict[str, Any]]] | None = None,
        before_run: Callable[[], None] | None = None,
    ) -> Measurement:
        """Warm-up (not recorded), then the measured wrk run."""
        p = svc.processes
        tag = f"{self.run_id}{scenario[:2]}{p}{connections}"
        say(f"{scenario}-{p}p-c{connections}: {self.opts.duration}s")
        if warmup:
            run_wrk(self.wrk, port, path, connections, self.opts.warmup, f"{tag}w", users)
        if before_run is not None:
            before_run()
        extra: dict[str, Any] = {}
        load = loadavg()
        busy = machine_busy_s()
        own = _own_cpu_s()
        rss_start = svc.snapshot()
        if during is None:
            result, cpu = run_wrk(
                self.wrk, port, path, connections, self.opts.duration, f"{tag}m", users
            )
        else:  # something to watch while wrk runs (mixed_spike)
            watcher = during()
            next(watcher)
            try:
                result, cpu = run_wrk(
                    self.wrk, port, path, connections, self.opts.duration, f"{tag}m", users
                )
            finally:
                extra = next(watcher)
        rss_end = svc.snapshot()
        busy = machine_busy_s() - busy
        own = _own_cpu_s() - own
        errors: dict[str, Any] = {"socket": result.socket_errors, "total": result.socket_errors}
        m = Measurement(
            scenario, p, connections, result, cpu, rss_start, rss_end, errors, extra, load, svc.name
        )
        ours = sum(m.cpu_seconds().values()) + own
        m.other_cores = max(0.0, (busy - ours) / result.duration_s) if result.duration_s else 0.0
        return m

    # ---- per process count

    def run(self) -> None:
        """Per process count: the yardstick, then one gateway for sold_out,
        rate_limited and mixed_spike (each spike's backlog is drained before
        the next run), and a gateway of its own for every admit run: its
        backlog of undelivered orders (the sink writes fewer orders per second
        than admit admits) would load whatever ran after it."""
        wanted = self.opts.scenarios
        for p in self.opts.processes:
            self.run_bare(p)
            shared = [
                (s, c)
                for s in ("sold_out", "rate_limited", "mixed_spike")
                if s in wanted
                for c in self.opts.connections
            ]
            if shared:
                self.run_gateway(p, f"gateway-{p}p", shared)
            if "admit" in wanted:
                for c in self.opts.connections:
                    self.run_gateway(p, f"gateway-{p}p-admit-c{c}", [("admit", c)])
        order = {(s, c): i for i, (s, c) in enumerate(
            (s, c) for s in SCENARIOS for c in self.opts.connections)}  # fmt: skip
        self.results.sort(key=lambda m: (m.processes, order[m.scenario, m.connections]))
        bare = {
            (m.processes, m.connections): m.wrk.rps for m in self.results if m.scenario == "bare"
        }
        for m in self.results:
            yardstick = bare.get((m.processes, m.connections), 0.0)
            m.ratio_to_bare = m.wrk.rps / yardstick if yardstick else 0.0

    def run_bare(self, p: int) -> None:
        port = free_port()
        svc = self._start(
            Service(
                f"bare-{p}p",
                [sys.executable, "-m", "loadtest.bare", "--port", str(port), "--processes", str(p)],
                clean_env(),
                self.tmp / f"bare-{p}p.log",
                p,
            )
        )
        svc.wait_ready(f"http://{HOST}:{port}/healthz")
        path = "/api/v1/sales/bare/orders"
        for c in self.opts.connections:
            m = self.measure("bare", svc, port, c, path)
            m.errors["total"] += m.wrk.non2xx  # it only ever answers 202
            self.results.append(m)
        self._stop(svc)

    def run_gateway(self, p: int, name: str, plan: Sequence[tuple[str, int]]) -> None:
        """A fresh ``seckill serve`` (new data dir, embedded Valkey) for *plan*."""
        port = free_port()
        token = secrets.token_urlsafe(24)
        data_dir = self.tmp / name
        data_dir.mkdir()
        env = {**clean_env(), "SECKILL_ADMIN_TOKEN": token}
        argv = [
            sys.executable, "-m", "seckill", "serve",
            "--host", HOST, "--port", str(port), "--processes", str(p),
            "--data-dir", str(data_dir), "--max-backlog", "0",
        ]  # fmt: skip
        svc = self._start(Service(name, argv, env, self.tmp / f"{name}.log", p))
        base = f"http://{HOST}:{port}"
        svc.wait_ready(base + "/readyz", log_line="seckill: serving on")
        admin = Admin(base, token)
        gw = _Gateway(self, svc, port, base, admin)
        for scenario, c in plan:
            getattr(gw, scenario)(c)
        self._stop(svc)


class _Gateway:
    """The gateway scenarios, for one running ``seckill serve``."""

    def __init__(self, bench: Bench, svc: Service, port: int, base: str, admin: Admin) -> None:
        self.bench, self.svc, self.port, self.base, self.admin = bench, svc, port, base, admin
        self.p = svc.processes
        self.has_metrics = buy_outcomes(base) is not None

    @property
    def opts(self) -> Options:
        return self.bench.opts

    def _problem(self, message: str) -> None:
        warn(self.bench.problems, message)

    def _checked(
        self,
        scenario: str,
        c: int,
        sale: str,
        expect: set[str],
        *,
        warmup: bool = True,
        users: int = 0,
        during: Callable[[], Iterator[dict[str, Any]]] | None = None,
    ) -> Measurement:
        """measure(), plus what the gateway itself says about the run: units
        sold during it, 5xx from /metrics, and a probe of what it answers now."""
        before_metrics = buy_outcomes(self.base) if self.has_metrics else None
        path = f"/api/v1/sales/{sale}/orders"
        marks: dict[str, int] = {}

        def before_run() -> None:
            marks["sold"] = self.admin.sold(sale)

        m = self.bench.measure(
            scenario,
            self.svc,
            self.port,
            c,
            path,
            warmup=warmup,
            users=users,
            during=during,
            before_run=before_run,
        )
        key = m.key
        sold = self.admin.sold(sale) - marks["sold"]
        m.extra["server_admitted"] = sold
        # wrk does not count the answers in flight when it stops (up to C), nor
        # those of the warm-up still in flight when the count was read (up to C).
        if not m.wrk.ok <= sold <= m.wrk.ok + 2 * c:
            self._problem(f"{key}: wrk saw {m.wrk.ok} 2xx but the sale sold {sold} units")
        if before_metrics is not None:
            time.sleep(METRICS_LAG)
            after = buy_outcomes(self.base) or {}
            delta = {k: int(v - before_metrics.get(k, 0.0)) for k, v in after.items()}
            m.extra["outcomes_incl_warmup"] = {k: v for k, v in delta.items() if v}
            m.errors["status_5xx"] = delta.get("unavailable", 0) + delta.get("overloaded", 0)
            m.errors["total"] += m.errors["status_5xx"]
        else:
            m.errors["status_5xx"] = None  # unknown: no /metrics; see the probe
        answers = probe(self.base, sale, f"{self.bench.run_id}probe{key}-")
        m.extra["probe"] = answers
        bad = {k: v for k, v in answers.items() if k not in expect}
        if bad:
            self._problem(f"{key}: after the run the gateway answered {bad}, expected {expect}")
        self.bench.results.append(m)
        return m

    def admit(self, c: int) -> None:
        sale = f"admit-c{c}"
        self.admin.put_sale(sale, 10**9)
        m = self._checked("admit", c, sale, {"202"})
        # Nothing but 202 is expected: every other answer is an error.
        m.errors["non2xx"] = m.wrk.non2xx
        m.errors["total"] += m.wrk.non2xx - (m.errors["status_5xx"] or 0)
        view = self.admin.sale(sale)
        m.extra["backlog_at_end"] = view.get("backlog")
        m.extra["orders_at_end"] = view.get("orders")

    def sold_out(self, c: int) -> None:
        sale = f"soldout-c{c}"
        self.admin.put_sale(sale, 1)
        status, _ = http(
            "POST",
            f"{self.base}/api/v1/sales/{sale}/orders",
            headers={"X-User-Id": f"{self.bench.run_id}seed"},
        )
        if status != 202:
            raise BenchError(f"sold_out: the one buy of {sale} answered {status}")
        m = self._checked("sold_out", c, sale, {"409 sold_out"})
        if m.wrk.ok:
            self._problem(f"{m.key}: {m.wrk.ok} 2xx answers from a sold-out sale")

    def rate_limited(self, c: int) -> None:
        sale = f"limited-c{c}"
        self.admin.put_sale(sale, 10**9)
        self.admin.limits(LIMITED)
        try:
            time.sleep(LIMITS_PROPAGATION)
            m = self._checked("rate_limited", c, sale, {"429 rate_limited", "202"})
        finally:
            self.admin.limits(UNLIMITED)
            time.sleep(LIMITS_PROPAGATION)
        admitted = m.extra.get("server_admitted", 0)
        # docs/API.md §5: at most rate × seconds + burst (slack: one second).
        bound = LIMITED["rate"] * (m.wrk.duration_s + 1) + LIMITED["burst"]
        m.extra["admitted_bound"] = bound
        if admitted > bound:
            self._problem(f"{m.key}: {admitted} admitted, over the bound {bound:.0f}")

    def mixed_spike(self, c: int) -> None:
        sale = f"spike-c{c}"
        self.admin.put_sale(sale, SPIKE_STOCK)
        m = self._checked(
            "mixed_spike",
            c,
            sale,
            {"409 sold_out", "202"},
            warmup=False,
            users=SPIKE_USERS,
            during=lambda: self._watch_sale(sale),
        )
        if m.extra.get("time_to_sold_out_s") is None and not self.opts.quick:
            self._problem(f"{m.key}: not sold out within {self.opts.duration}s")
        started = m.extra.pop("_started")
        drained = self._drain(sale)
        m.extra["time_to_drain_s"] = (
            None if drained is None else round(time.monotonic() - started, 3)
        )
        m.extra["orders"] = self.admin.sale(sale).get("orders")

    def _watch_sale(self, sale: str) -> Iterator[dict[str, Any]]:
        """While wrk runs: when did the stock reach 0 (seconds since wrk started)?"""
        found: dict[str, Any] = {"time_to_sold_out_s": None}
        stop = threading.Event()
        started = time.monotonic()

        def poll() -> None:
            while not stop.is_set():
                status, view = http("GET", f"{self.base}/admin/v1/sales/{sale}", None,
                                    self.admin.headers)  # fmt: skip
                if status == 200 and int(view["stock_left"]) == 0:
                    found["time_to_sold_out_s"] = round(time.monotonic() - started, 3)
                    return
                stop.wait(0.05)

        thread = threading.Thread(target=poll, name="watch-sale", daemon=True)
        thread.start()
        yield {}
        stop.set()
        thread.join(15)
        view = self.admin.sale(sale)
        yield {**found, "backlog_at_end": view.get("backlog"), "_started": started}

    def _drain(self, sale: str) -> float | None:
        """Wait until the sale's order backlog is 0 (bounded); the seconds it took."""
        started = time.monotonic()
        deadline = started + self.opts.drain_timeout
        while time.monotonic() < deadline:
            if int(self.admin.sale(sale).get("backlog", 0)) == 0:
                return round(time.monotonic() - started, 3)
            time.sleep(0.1)
        self._problem(f"{sale}: backlog not drained within {self.opts.drain_timeout:.0f}s")
        return None


# ----------------------------------------------------------------- report


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1])
    wrk_version = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=5)
        wrk_version = (out.stdout + out.stderr).strip().splitlines()[0].split(" Copyright")[0]
    git = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5,
        )  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain"],
            capture_output=True, text=True, timeout=5,
        )  # fmt: skip
        git = rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    versions = {}
    for mod in ("aiohttp", "uvloop", "redis"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[mod] = version(mod)
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "mem_total_mb": mem_kb // 1024,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": wrk_version,
        "packages": versions,
        "git": git,
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


def _mb(kb: int) -> str:
    return f"{kb / 1024:.0f}"


def human_table(results: list[Measurement]) -> list[str]:
    rows = [
        "scenario       P    C      rps   p50ms   p99ms  ratio  errors  non2xx  "
        "worker RSS MB start->end  cpu us/req worker/redis/wrk  other cores  notes"
    ]
    for m in results:
        start = [r["rss_kb"] for r in m.rss_start if r["role"] == "worker"]
        end = [r["rss_kb"] for r in m.rss_end if r["role"] == "worker"]
        rss = f"{'/'.join(_mb(k) for k in start)}->{'/'.join(_mb(k) for k in end)}"
        cpu = m.cpu_us_per_request()
        cpu_s = f"{cpu.get('worker', 0):.0f}/{cpu.get('redis', 0):.0f}/{cpu.get('wrk', 0):.0f}"
        notes = []
        if "time_to_sold_out_s" in m.extra:
            t = m.extra["time_to_sold_out_s"]
            notes.append("not sold out" if t is None else f"sold out {t}s")
        if "time_to_drain_s" in m.extra:
            notes.append(f"drained {m.extra['time_to_drain_s']}s")
        if m.scenario == "admit":
            notes.append(f"backlog at end {m.extra.get('backlog_at_end')}")
        if m.errors.get("status_5xx") is None and m.scenario not in ("bare", "admit"):
            notes.append("5xx unknown (no /metrics)")
        rows.append(
            f"{m.scenario:<13} {m.processes:>2} {m.connections:>4} {m.wrk.rps:>8.0f} "
            f"{m.wrk.ms('p50'):>7.2f} {m.wrk.ms('p99'):>7.2f} {m.ratio_to_bare:>6.2f} "
            f"{m.errors['total']:>7} {m.wrk.non2xx:>7}  {rss:<25}  {cpu_s:<27}  "
            f"{m.other_cores:>11.2f}  {'; '.join(notes)}"
        )
    return rows


def rss_lines(services: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for name, info in services.items():
        peaks = ", ".join(
            f"{row['role']} {row['pid']} {_mb(row['hwm_kb'])} MB" for row in info["peak_rss_kb"]
        )
        lines.append(f"peak RSS {name}: {peaks}")
    return lines


def rss_drift(results: list[Measurement]) -> dict[str, Any]:
    """Per gateway process: RSS at the start of its service's first measured
    run (after the warm-up) and at the end of its last, and the change in
    percent (the target: within ±10% over a 60 s run)."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(m.service for m in results if m.scenario != "bare"):
        runs = [m for m in results if m.service == name]
        first = {r["pid"]: r["rss_kb"] for r in runs[0].rss_start if r["role"] == "worker"}
        last = {r["pid"]: r["rss_kb"] for r in runs[-1].rss_end if r["role"] == "worker"}
        out[name] = {
            "runs": [m.key for m in runs],
            "workers": {
                str(pid): {
                    "start_kb": kb,
                    "end_kb": last.get(pid),
                    "change_pct": None
                    if pid not in last
                    else round(100 * (last[pid] - kb) / kb, 1),
                }
                for pid, kb in first.items()
            },
        }
    return out


def markdown(results: list[Measurement], machine: dict[str, Any], when: str) -> str:
    lines = [
        f"Taken {when} on {machine['cpu_model']} ({machine['nproc']} CPUs, wrk and the server "
        f"sharing them), Python {machine['python']}, `{machine['wrk']}`, commit {machine['git']}.",
        "",
        "| scenario | processes | connections | requests/s | p50 ms | p99 ms | × bare | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in results:
        lines.append(
            f"| {m.scenario} | {m.processes} | {m.connections} | {m.wrk.rps:.0f} | "
            f"{m.wrk.ms('p50'):.2f} | {m.wrk.ms('p99'):.2f} | {m.ratio_to_bare:.2f} | "
            f"{m.errors['total']} |"
        )
    return "\n".join(lines) + "\n"


def write_report(bench: Bench, started: datetime, machine: dict[str, Any]) -> Path:
    out_dir = bench.opts.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    finished = datetime.now(UTC)
    report = {
        "schema": 1,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": finished.isoformat(timespec="seconds"),
        "machine": machine,
        "loadavg_at_end": Path("/proc/loadavg").read_text().split()[:3],
        "config": {
            "scenarios": list(bench.opts.scenarios),
            "processes": list(bench.opts.processes),
            "connections": list(bench.opts.connections),
            "duration_s": bench.opts.duration,
            "warmup_s": bench.opts.warmup,
            "quick": bench.opts.quick,
            "wrk_threads": THREADS,
            "wrk_timeout": WRK_TIMEOUT,
            "spike_stock": SPIKE_STOCK,
            "spike_users": SPIKE_USERS,
            "rate_limited_limits": LIMITED,
        },
        "lines": [m.line() for m in bench.results],
        "results": [m.as_json() for m in bench.results],
        "services": bench.services,
        "rss_drift": rss_drift(bench.results),
        "problems": bench.problems,
    }
    text = json.dumps(report, indent=2) + "\n"
    path = out_dir / f"bench-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(text)
    (out_dir / "latest.json").write_text(text)
    (out_dir / "latest.md").write_text(
        markdown(bench.results, machine, started.strftime("%Y-%m-%d %H:%M UTC"))
    )
    return path


# -------------------------------------------------------------------- main


def _csv(
    kind: Callable[[str], Any], allowed: tuple[Any, ...] | None = None
) -> Callable[[str], Any]:
    def parse(text: str) -> tuple[Any, ...]:
        try:
            items = tuple(kind(x.strip()) for x in text.split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a comma-separated list: {text!r}") from None
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        if allowed is not None:
            unknown = [x for x in items if x not in allowed]
            if unknown:
                raise argparse.ArgumentTypeError(
                    f"unknown {unknown}; choose from {','.join(map(str, allowed))}"
                )
        return items

    return parse


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of seconds: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_args(argv: list[str] | None) -> Options:
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench",
        description="The seckill benchmark (docs/API.md §8). See the module docstring.",
    )
    parser.add_argument(
        "--scenarios",
        type=_csv(str, SCENARIOS),
        default=SCENARIOS,
        help="comma-separated; bare is always measured (default: all)",
    )
    parser.add_argument("--processes", type=_csv(int, (1, 2)), default=(1, 2))
    parser.add_argument("--connections", type=_csv(int), default=(64, 256))
    parser.add_argument(
        "--duration",
        type=_positive_int,
        default=None,
        help="measured seconds per run (env BENCH_DURATION; default 10, 1 with BENCH_QUICK=1)",
    )
    parser.add_argument("--warmup", type=_positive_int, default=None, help="default 2 (quick: 1)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "var" / "bench")
    args = parser.parse_args(argv)
    duration = args.duration
    if duration is None:
        env = os.environ.get("BENCH_DURATION")
        try:
            duration = _positive_int(env) if env else (1 if quick else 10)
        except argparse.ArgumentTypeError as exc:
            parser.error(f"BENCH_DURATION: {exc}")
    if any(c < THREADS for c in args.connections):
        parser.error(f"--connections must be at least {THREADS} (wrk -t{THREADS})")
    scenarios = tuple(s for s in SCENARIOS if s in args.scenarios or s == "bare")
    return Options(
        scenarios=scenarios,
        processes=tuple(sorted(set(args.processes))),
        connections=tuple(dict.fromkeys(args.connections)),
        duration=duration,
        warmup=args.warmup or (1 if quick else 2),
        out_dir=args.out_dir,
        quick=quick,
        drain_timeout=10.0 if quick else 60.0,
    )


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    wrk = wrk_binary()
    signal.signal(signal.SIGTERM, _on_sigterm)
    started = datetime.now(UTC)
    machine = machine_info()
    bench = Bench(opts, wrk)
    say(
        f"{machine['nproc']} CPU(s), {machine['cpu_model']}; load {' '.join(machine['loadavg'])}; "
        f"{opts.duration}s runs after {opts.warmup}s warm-ups"
    )
    try:
        bench.run()
    except BenchError as exc:
        bench.close()
        fail(str(exc))
    except KeyboardInterrupt:
        bench.close()
        print("bench: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    finally:
        bench.close()
    path = write_report(bench, started, machine)
    print()
    for row in human_table(bench.results):
        print(row)
    for row in rss_lines(bench.services):
        print(row)
    for name, drift in rss_drift(bench.results).items():
        for pid, d in drift["workers"].items():
            pct = "gone" if d["change_pct"] is None else f"{d['change_pct']:+}%"
            print(
                f"RSS {name} worker {pid}: {_mb(d['start_kb'])} MB -> "
                f"{_mb(d['end_kb'] or 0)} MB ({pct}) over {', '.join(drift['runs'])}"
            )
    if bench.problems:
        print(f"{len(bench.problems)} problem(s): see 'problems' in {path}")
    print(f"results: {path} (and latest.json, latest.md)")
    print()
    for m in bench.results:
        print(m.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
