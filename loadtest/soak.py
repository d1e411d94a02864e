"""The soak: minutes of mixed load at a fixed rate, watching for growth.

    python -m loadtest.soak [--minutes 10] [--rate N | --capacity-seconds 10]
        [--interval 30] [--processes 2] [--concurrency 64]

It starts ``seckill serve --processes N`` (through the launcher: embedded
Valkey, SQLite sink, a temporary data dir) and three sales: ``soldout``
(100 units, gone in the first second: then 409s), ``hot`` (a big stock,
per-user limit 5) and ``limited`` (a big stock, per-user limit 1, few users:
409 limit_reached), under a cluster-wide token bucket (``--sale-rate`` per
sale: most buys of the big sales get 429). The load is a mix: buys on the
three sales, reads of orders bought (by their own user) and of sales.

Without ``--rate`` it first measures the capacity of this machine with the
same mix for ``--capacity-seconds`` at full concurrency (client included:
it runs here too), and runs at half of it.

Every ``--interval`` seconds one table row: requests/s achieved, p50/p99
latency of that interval, errors (5xx and transport), RSS of the gateway's
Python processes and of its Redis, open fds of the gateway's processes.
The verdict compares the last third of the samples with the first third
(the median of each):
``flat`` when none of gateway RSS, fds and p99 grew by more than 10 % (p99
and fds also pass within a small absolute slack: 2 ms, 4 fds; a fall is
reported as such, and is no finding: the machine got quieter); Redis RSS is
reported, not judged (it holds every order admitted). A p99 that grew while
the CPU taken by other jobs on the machine (the ``others`` column: busy
time less the gateway's, its Redis's and this client's) grew by more than a
quarter of a core is ``inconclusive``, not growth. Exit 0 when flat, 1 when
something grew or the verdict is inconclusive, 2 on bad usage (one line on
stderr).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import statistics
import sys
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import aiohttp
import click
from aiolimiter import AsyncLimiter

from loadtest import cli
from loadtest.bench.sampling import ProcessSampler, loadavg, machine_busy_s, own_cpu_s
from seckill.tools.launcher import GatewayProcess, LaunchError

#: (sale id, stock, per-user limit, users drawn from)
SALES = (
    ("soldout", 100, 1, 100_000),
    ("hot", 10_000_000, 5, 20_000),
    ("limited", 10_000_000, 1, 300),
)
#: the mix: (kind, weight)
MIX = (
    ("buy:soldout", 40),
    ("buy:hot", 25),
    ("buy:limited", 10),
    ("read:order", 15),
    ("read:sale", 10),
)
REQUEST_TIMEOUT = 10.0
#: the verdict: relative band, and absolute slack for p99 (ms) and fds
BAND, P99_SLACK_MS, FD_SLACK = 0.10, 2.0, 4
#: CPU (in cores) other jobs on the machine may gain before a p99 that grew
#: with it is called inconclusive rather than growth
OTHERS_SLACK = 0.25


def fail(message: str) -> NoReturn:
    cli.fail("soak", message)


@dataclass
class Window:
    """What one sampling interval saw."""

    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    by_status: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Sample:
    minute: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    gateway_rss_mb: float
    redis_rss_mb: float
    fds: int
    #: of those fds, connections to Redis (the pools grow on demand up to
    #: --redis-pool-size per process)
    redis_conns: int = 0
    #: the machine's 1-minute load average (other jobs move p99)
    load: float = 0.0
    #: cores busy with other jobs over the interval (not the gateway, its
    #: Redis or this client)
    others: float = 0.0

    def cells(self) -> list[str]:
        return [
            f"{self.minute:.1f}",
            f"{self.rps:.0f}",
            f"{self.p50_ms:.1f}",
            f"{self.p99_ms:.1f}",
            str(self.errors),
            f"{self.gateway_rss_mb:.1f}",
            f"{self.redis_rss_mb:.1f}",
            str(self.fds),
            str(self.redis_conns),
            f"{self.load:.1f}",
            f"{self.others:.2f}",
        ]


HEADER = [
    "min", "req/s", "p50 ms", "p99 ms", "errors", "gw RSS MB", "redis RSS MB", "fds",
    "to redis", "load", "others",
]  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def open_fds(pid: int) -> list[str]:
    """What each open fd of *pid* points at ("socket:[inode]", a path, …)."""
    base = f"/proc/{pid}/fd"
    try:
        names = os.listdir(base)
    except OSError:
        return []
    targets = []
    for name in names:
        with contextlib.suppress(OSError):  # closed meanwhile
            targets.append(os.readlink(f"{base}/{name}"))
    return targets


def sockets_to(port: int) -> set[str]:
    """Inodes of the established TCP sockets whose remote port is *port*
    (/proc/net/tcp and tcp6), as "socket:[inode]"."""
    found = set()
    for table_path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table_path).read_text().splitlines()[1:]:
                f = line.split()
                if len(f) > 9 and f[3] == "01" and int(f[2].rsplit(":", 1)[1], 16) == port:
                    found.add(f"socket:[{f[9]}]")
    return found


class Load:
    """The mixed load, paced by a limiter (None: as fast as *concurrency* allows)."""

    def __init__(self, url: str, concurrency: int, seed: int = 7) -> None:
        self.url = url
        self.concurrency = concurrency
        self.rnd = random.Random(seed)
        self.kinds = [k for k, w in MIX for _ in range(w)]
        self.bought: deque[tuple[str, str]] = deque(maxlen=2000)
        self.window = Window()
        self.seq = itertools.count()

    def take_window(self) -> Window:
        window, self.window = self.window, Window()
        return window

    def _request(self) -> tuple[str, str, dict[str, str], Any]:
        kind = self.rnd.choice(self.kinds)
        if kind == "read:order" and self.bought:
            order_id, user = self.bought[self.rnd.randrange(len(self.bought))]
            return "GET", f"/api/v1/orders/{order_id}", {"X-User-Id": user}, None
        if kind.startswith("read"):
            sale = self.rnd.choice(SALES)[0]
            return "GET", f"/api/v1/sales/{sale}", {}, None
        sale = kind.split(":", 1)[1]
        users = next(s[3] for s in SALES if s[0] == sale)
        user = f"s{self.rnd.randrange(users)}"
        return "POST", f"/api/v1/sales/{sale}/orders", {"X-User-Id": user}, None

    async def run(
        self, session: aiohttp.ClientSession, seconds: float, limiter: AsyncLimiter | None
    ) -> int:
        """Load for *seconds* over *session* (one for the whole soak: its
        keep-alive connections stay open between samples, as a real client
        pool's would); the number of requests answered."""
        deadline = time.monotonic() + seconds
        answered = 0

        async def one(session: aiohttp.ClientSession) -> None:
            nonlocal answered
            method, path, headers, body = self._request()
            t0 = time.perf_counter()
            try:
                async with session.request(
                    method, self.url + path, headers=headers, json=body
                ) as r:
                    data = await r.read()
                    status = r.status
            except (TimeoutError, aiohttp.ClientError):
                self.window.errors += 1
                return
            self.window.latencies_ms.append((time.perf_counter() - t0) * 1000)
            key = str(status)
            self.window.by_status[key] = self.window.by_status.get(key, 0) + 1
            answered += 1
            if status >= 500:
                self.window.errors += 1
            elif status == 202 and b"order_id" in data:
                order_id = json.loads(data)["order_id"]
                self.bought.append((order_id, headers["X-User-Id"]))

        async def worker(session: aiohttp.ClientSession) -> None:
            while time.monotonic() < deadline:
                if limiter is not None:
                    await limiter.acquire()
                    if time.monotonic() >= deadline:
                        return
                await one(session)

        await asyncio.gather(*(worker(session) for _ in range(self.concurrency)))
        return answered

    def session(self) -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self.concurrency),
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
        )


def group_cpu_s(sampler: ProcessSampler) -> float:
    """CPU seconds used so far by the gateway's processes and its Redis."""
    return sum(row["cpu_s"] or 0.0 for row in sampler.snapshot())


def sample(
    sampler: ProcessSampler,
    window: Window,
    seconds: float,
    minute: float,
    redis_port: int,
    others: float = 0.0,
) -> Sample:
    gateway_kb = redis_kb = 0
    fds: list[str] = []
    for row in sampler.snapshot():
        if row["role"] == "redis":
            redis_kb += row["rss_kb"]
        else:
            gateway_kb += row["rss_kb"]
            fds += open_fds(row["pid"])
    to_redis = sockets_to(redis_port) if redis_port else set()
    lat = window.latencies_ms
    return Sample(
        minute,
        len(lat) / seconds if seconds > 0 else 0.0,
        statistics.median(lat) if lat else 0.0,
        percentile(lat, 0.99),
        window.errors,
        gateway_kb / 1024,
        redis_kb / 1024,
        len(fds),
        sum(1 for f in fds if f in to_redis),
        float(loadavg()[0]),
        others,
    )


@dataclass(frozen=True)
class Verdict:
    flat: bool
    lines: list[str]
    #: p99 grew, but so did the CPU other jobs took: neither flat nor proved growth
    inconclusive: bool = False

    @property
    def word(self) -> str:
        if self.flat:
            return "flat"
        return "inconclusive" if self.inconclusive else "NOT flat"


def verdict(samples: list[Sample]) -> Verdict:
    """Last third against first third (the median of each): gateway RSS, fds and
    p99 must not have grown past the band (+10 %, or the absolute slack)."""
    if len(samples) < 3:
        return Verdict(False, ["too few samples for a verdict (need 3): run longer"])
    third = max(1, len(samples) // 3)
    first, last = samples[:third], samples[-third:]
    lines = []
    flat = True
    inconclusive = False
    others_a = statistics.median(s.others for s in first)
    others_b = statistics.median(s.others for s in last)
    for name, get, slack in (
        ("gateway RSS MB", lambda s: s.gateway_rss_mb, 0.0),
        ("fds", lambda s: float(s.fds), float(FD_SLACK)),
        ("p99 ms", lambda s: s.p99_ms, P99_SLACK_MS),
        ("redis RSS MB", lambda s: s.redis_rss_mb, None),
    ):
        # medians: one noisy interval (another job on the machine) does not decide
        a = statistics.median(get(s) for s in first)
        b = statistics.median(get(s) for s in last)
        change = (b - a) / a if a else 0.0
        if slack is None:
            lines.append(f"{name}: {a:.1f} → {b:.1f} ({change:+.1%}; reported, not judged)")
            continue
        # growth is what a soak looks for; a fall (a machine that got quieter) is no finding
        grew = change > BAND and b - a > slack
        word = "GREW" if grew else ("fell" if change < -BAND and a - b > slack else "flat")
        if grew and name == "p99 ms" and others_b - others_a > OTHERS_SLACK:
            # latency follows the neighbours' CPU on a shared machine: not the gateway's doing
            word = (
                f"grew with other jobs' CPU ({others_a:.2f} → {others_b:.2f} cores): inconclusive"
            )
            inconclusive = True
        flat = flat and not grew
        lines.append(f"{name}: {a:.1f} → {b:.1f} ({change:+.1%}) {word}")
    return Verdict(flat, lines, inconclusive and all("GREW" not in line for line in lines))


WIDTHS = [max(len(h), 7) for h in HEADER]


def row_line(cells: list[str]) -> str:
    return "  ".join(c.rjust(w) for c, w in zip(cells, WIDTHS, strict=True))


def table(samples: list[Sample]) -> Iterator[str]:
    """The header, a rule, and one line per sample (fixed widths: printed as it goes)."""
    yield row_line(HEADER)
    yield "  ".join("-" * w for w in WIDTHS)
    for s in samples:
        yield row_line(s.cells())


def set_up(gateway: GatewayProcess, sale_rate: float) -> None:
    for sale, stock, limit, _ in SALES:
        status, body = gateway.admin(
            "PUT", f"/admin/v1/sales/{sale}", {"stock": stock, "per_user_limit": limit}
        )
        if status != 201:
            raise LaunchError(f"creating sale {sale} answered {status}: {body}")
    status, body = gateway.admin(
        "PUT", "/admin/v1/limits", {"rate": sale_rate, "burst": max(1, int(sale_rate))}
    )
    if status != 200:
        raise LaunchError(f"setting the limits answered {status}: {body}")


async def soak(
    gateway: GatewayProcess,
    processes: int,
    minutes: float,
    rate: float | None,
    capacity_seconds: float,
    interval: float,
    concurrency: int,
) -> tuple[float, float | None, list[Sample]]:
    load = Load(gateway.url, concurrency)
    async with load.session() as session:
        return await _soak(
            gateway, load, session, processes, minutes, rate, capacity_seconds, interval
        )


async def _soak(
    gateway: GatewayProcess,
    load: Load,
    session: aiohttp.ClientSession,
    processes: int,
    minutes: float,
    rate: float | None,
    capacity_seconds: float,
    interval: float,
) -> tuple[float, float | None, list[Sample]]:
    capacity = None
    if rate is None:
        click.echo(f"measuring capacity for {capacity_seconds:.0f}s…", err=True)
        answered = await load.run(session, capacity_seconds, None)
        load.take_window()
        capacity = answered / capacity_seconds
        rate = max(1.0, capacity / 2)
    click.echo(
        f"soak: {minutes:g} min at {rate:.0f} req/s"
        + (f" (half of the {capacity:.0f} req/s measured)" if capacity else ""),
        err=True,
    )
    limiter = AsyncLimiter(max(1.0, rate / 20), 0.05)
    sampler = ProcessSampler(gateway.pid, processes)
    redis_port = urlsplit(gateway.redis_url).port or 0
    samples: list[Sample] = []
    end = time.monotonic() + minutes * 60
    started = time.monotonic()
    for line in table([]):
        click.echo(line)
    while (left := end - time.monotonic()) > 1:
        span = min(interval, left)
        t0 = time.monotonic()
        cpu0 = (machine_busy_s(), own_cpu_s(), group_cpu_s(sampler))
        await load.run(session, span, limiter)
        cpu1 = (machine_busy_s(), own_cpu_s(), group_cpu_s(sampler))
        took = time.monotonic() - t0
        others = max(0.0, (cpu1[0] - cpu0[0]) - (cpu1[1] - cpu0[1]) - (cpu1[2] - cpu0[2])) / took
        minute = (time.monotonic() - started) / 60
        s = sample(sampler, load.take_window(), took, minute, redis_port, others)
        samples.append(s)
        click.echo(row_line(s.cells()))
        if not gateway.running():
            raise LaunchError(f"the gateway exited during the soak: {gateway.tail()}")
    return rate, capacity, samples


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--minutes", type=click.FloatRange(0.1, 24 * 60), default=10.0, show_default=True)
@click.option(
    "--rate",
    type=click.FloatRange(1, 100_000),
    default=None,
    help="Requests/s to hold (default: half the capacity measured first).",
)
@click.option("--capacity-seconds", type=click.FloatRange(2, 120), default=10.0, show_default=True)
@click.option(
    "--interval",
    type=click.FloatRange(1, 600),
    default=30.0,
    show_default=True,
    help="Seconds between samples.",
)
@click.option("--processes", type=click.IntRange(1, 16), default=2, show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 1000), default=64, show_default=True)
@click.option(
    "--sale-rate",
    type=click.FloatRange(1, 100_000),
    default=50.0,
    show_default=True,
    help="Each sale's token bucket, buys/s (the rest get 429).",
)
def main(
    minutes: float,
    rate: float | None,
    capacity_seconds: float,
    interval: float,
    processes: int,
    concurrency: int,
    sale_rate: float,
) -> None:
    """Soak a gateway with mixed load; exit 0 when RSS, fds and p99 stay flat."""
    if interval > minutes * 60 / 3:
        fail(f"--interval {interval:g}s leaves fewer than 3 samples in {minutes:g} min")
    gateway = GatewayProcess("--processes", str(processes), "--max-backlog", "0", name="soak")
    try:
        gateway.wait_ready()
        set_up(gateway, sale_rate)
        rate, _, samples = asyncio.run(
            soak(gateway, processes, minutes, rate, capacity_seconds, interval, concurrency)
        )
    except LaunchError as exc:
        fail(str(exc))
    finally:
        gateway.kill()
    result = verdict(samples)
    for line in result.lines:
        click.echo(f"  {line}")
    click.echo(f"verdict: {result.word} ({len(samples)} samples)")
    sys.exit(0 if result.flat else 1)


def run() -> None:
    """Entry point (see :func:`loadtest.cli.run`)."""
    cli.run(main, "soak", "interrupted; the gateway is stopped")


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        run()
