"""The runner: which servers are started for which scenarios, one measurement
(warm-up, then the measured wrk run with /proc read around it), and the
ratios to the yardstick.

Everything it starts is in :attr:`Bench.live` until it is stopped, so
:meth:`Bench.close` (on an error, Ctrl-C or SIGTERM) leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import secrets
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from loadtest.bench.console import say, warn
from loadtest.bench.measurement import Measurement
from loadtest.bench.sampling import loadavg, machine_busy_s, own_cpu_s
from loadtest.bench.scenarios import SCENARIOS, GatewayScenarios, bare
from loadtest.bench.servers import Server, start_bare, start_gateway
from loadtest.bench.shards import run_shards, scenario_name
from loadtest.bench.wrk import run_wrk
from seckill.tools.launcher import GatewayProcess

S = TypeVar("S", bound=Server[Any])


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
    #: primaries per cluster for the opt-in shard scenario (empty: not run)
    shards: tuple[int, ...] = ()
    #: ``--admit-batch`` of every gateway started (None: the gateway's default)
    admit_batch: int | None = None

    def gateway_flags(self) -> tuple[str, ...]:
        return () if self.admit_batch is None else ("--admit-batch", str(self.admit_batch))


class Bench:
    def __init__(self, opts: Options, wrk: str) -> None:
        self.opts, self.wrk = opts, wrk
        self.results: list[Measurement] = []
        #: per server stopped: its process count, peak RSS per process, exit code
        self.services: dict[str, dict[str, Any]] = {}
        self.problems: list[str] = []
        self.live: list[Server[Any]] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="seckill-bench-"))
        #: in every user id, so no two benchmarks (nor two runs) buy as one user
        self.run_id = secrets.token_hex(3)

    # ---- lifecycle

    def close(self) -> None:
        for server in reversed(self.live):
            server.stop()
        self.live.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _start(self, server: S) -> S:
        """Track *server* (close() stops it), then wait until it is ready."""
        self.live.append(server)
        server.wait_ready()
        return server

    def _stop(self, server: Server[Any]) -> None:
        code = server.stop()
        self.live.remove(server)
        if code not in (0, -signal.SIGTERM):
            warn(self.problems, f"{server.name} exited {code} on SIGTERM: {server.log_tail()}")
        self.services[server.name] = {
            "processes": server.processes,
            "peak_rss_kb": server.sampler.peaks(),
            "exit_code": code,
        }

    # ---- one measurement

    def measure(
        self,
        scenario: str,
        server: Server[Any],
        connections: int,
        path: str,
        *,
        warmup: bool = True,
        users: int = 0,
        during: Callable[[], Iterator[dict[str, Any]]] | None = None,
        before_run: Callable[[], None] | None = None,
    ) -> Measurement:
        """Warm-up (not recorded), then the measured wrk run.

        *during*, when given, is a generator started just before the measured
        run and resumed once after it; what it yields then goes into the
        measurement's extra figures (mixed_spike watches its sale with it).
        """
        p, port = server.processes, server.port
        tag = f"{self.run_id}{scenario[:2]}{p}{connections}"
        say(f"{scenario}-{p}p-c{connections}: {self.opts.duration}s")
        if warmup:
            run_wrk(self.wrk, port, path, connections, self.opts.warmup, f"{tag}w", users)
        if before_run is not None:
            before_run()
        extra: dict[str, Any] = {}
        load = float(loadavg()[0])
        busy = machine_busy_s()
        own = own_cpu_s()
        rss_start = server.sampler.snapshot()
        if during is None:
            result, cpu = run_wrk(
                self.wrk, port, path, connections, self.opts.duration, f"{tag}m", users
            )
        else:
            watcher = during()
            next(watcher)
            try:
                result, cpu = run_wrk(
                    self.wrk, port, path, connections, self.opts.duration, f"{tag}m", users
                )
            finally:
                extra = next(watcher)
        rss_end = server.sampler.snapshot()
        busy = machine_busy_s() - busy
        own = own_cpu_s() - own
        errors: dict[str, Any] = {"socket": result.socket_errors, "total": result.socket_errors}
        m = Measurement(
            scenario, p, connections, result, cpu, rss_start, rss_end, errors, extra, load,
            server.name,
        )  # fmt: skip
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
            for n in self.opts.shards:
                run_shards(self, n, p)
        names = [*SCENARIOS, *(scenario_name(n) for n in self.opts.shards)]
        order = {(s, c): i for i, (s, c) in enumerate(
            (s, c) for s in names for c in self.opts.connections)}  # fmt: skip
        self.results.sort(key=lambda m: (m.processes, order[m.scenario, m.connections]))
        yardstick = {
            (m.processes, m.connections): m.wrk.rps for m in self.results if m.scenario == "bare"
        }
        for m in self.results:
            rps = yardstick.get((m.processes, m.connections), 0.0)
            m.ratio_to_bare = m.wrk.rps / rps if rps else 0.0

    def run_bare(self, p: int) -> None:
        name = f"bare-{p}p"
        server = self._start(start_bare(name, p, self.tmp / f"{name}.log"))
        for c in self.opts.connections:
            bare(self, server, c)
        self._stop(server)

    def start_cluster_gateway(self, p: int, name: str, redis_url: str) -> Server[GatewayProcess]:
        """A fresh ``seckill serve --role gateway`` on a cluster (the shard
        scenario): it admits and delivers nothing, with its own data dir."""
        data_dir = self.tmp / name
        data_dir.mkdir()
        flags = ("--redis-url", redis_url, "--role", "gateway", *self.opts.gateway_flags())
        return self._start(start_gateway(name, p, data_dir, self.tmp / f"{name}.log", *flags))

    def stop_server(self, server: Server[Any]) -> None:
        self._stop(server)

    def run_gateway(self, p: int, name: str, plan: Sequence[tuple[str, int]]) -> None:
        """A fresh ``seckill serve`` (new data dir, embedded Valkey) for *plan*."""
        data_dir = self.tmp / name
        data_dir.mkdir()
        server = self._start(
            start_gateway(name, p, data_dir, self.tmp / f"{name}.log", *self.opts.gateway_flags())
        )
        scenarios = GatewayScenarios(self, server)
        for scenario, c in plan:
            getattr(scenarios, scenario)(c)
        self._stop(server)
