"""``seckill demo``: a finite flash sale, end to end, checked.

Starts ``seckill serve`` through the launcher (embedded Valkey, the SQLite
sink, a free loopback port, its own admin token; its log is
``<data-dir>/gateway.log``), creates a sale,
lets a crowd of simulated customers at it, waits for every order to be
delivered, checks the invariants of docs/API.md §6 (Redis and the sink, directly),
prints a summary and stops the gateway — also on Ctrl-C or a failure. The
whole run is bounded by a deadline; it only ever talks to 127.0.0.1.

Each customer is one coroutine: it buys once (its own user id, one
Idempotency-Key for all its tries), retries a 429/503 after ``Retry-After``
a bounded number of times, and follows a 202 with ``GET /api/v1/orders/{id}``
until the order is final. A semaphore bounds the requests in flight.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import signal
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import uvloop
from redis.asyncio import Redis
from redis.exceptions import RedisError

from seckill.redis.client import connect
from seckill.tools.admin_client import AdminClientError, call
from seckill.tools.invariants import Check, CheckError, check_sale, load_sale_orders, read_summed
from seckill.tools.launcher import GatewayProcess, LaunchError

HOST = "127.0.0.1"
#: tries per customer for one buy: the first, then retries after 429/503/no answer.
MAX_TRIES = 4
#: the longest Retry-After a customer waits out (seconds).
MAX_RETRY_AFTER = 5.0
#: order polling: first interval, cap (seconds), and consecutive errors before giving up.
POLL_FIRST, POLL_CAP, POLL_ERRORS = 0.02, 0.5, 20
#: seconds between looks at the sale hash (sell-out and drain times).
MONITOR_INTERVAL = 0.02
#: seconds kept back from the deadline for the checks, and allowed for the gateway to stop.
CHECK_RESERVE = 15.0
#: lines of the gateway's output shown when something went wrong.
TAIL = 8


class DemoError(Exception):
    """The demo could not run (the gateway failed); one line for the user."""


@dataclass(frozen=True)
class DemoOptions:
    stock: int = 1000
    customers: int = 5000
    per_user_limit: int = 1
    processes: int = 2
    #: None = a fresh temporary directory, removed afterwards.
    data_dir: Path | None = None
    concurrency: int = 256
    #: seconds for the whole run (gateway start, crowd, drain); the checks and
    #: the gateway's stop get CHECK_RESERVE and the launcher's STOP_TIMEOUT on top at most.
    deadline: float = 120.0
    #: the sale's buckets (issue 13)
    buckets: int = 1
    #: an existing Redis or Redis Cluster (``redis+cluster://``) instead of the
    #: embedded server; the demo's sale has a fresh id, nothing else is touched
    redis_url: str | None = None


@dataclass
class CrowdStats:
    """What the customers saw. Times are seconds since the first request."""

    buy_requests: int = 0
    retries: int = 0
    #: every answer to a buy: "admitted" for a 202, else its error code.
    answers: Counter[str] = field(default_factory=Counter)
    #: order id -> quantity, from the 202s (a replay answers the same id).
    admitted: dict[str, int] = field(default_factory=dict)
    #: the last status each admitted order was seen in.
    finals: dict[str, str] = field(default_factory=dict)
    order_polls: int = 0
    last_buy_answer: float = 0.0
    last_admission: float = 0.0
    sold_out_at: float | None = None
    drained_at: float | None = None


class Crowd:
    """The simulated customers of one sale."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        sale_id: str,
        per_user_limit: int,
        concurrency: int,
    ) -> None:
        self.session = session
        self.base_url = base_url
        self.sale_id = sale_id
        self.per_user_limit = per_user_limit
        self.slots = asyncio.Semaphore(concurrency)
        self.stats = CrowdStats()
        self.start = 0.0

    def now(self) -> float:
        return time.monotonic() - self.start

    async def run(self, customers: int) -> CrowdStats:
        self.start = time.monotonic()
        await asyncio.gather(*(self.customer(i) for i in range(customers)))
        return self.stats

    async def _request(
        self, method: str, path: str, headers: dict[str, str], body: Any = None
    ) -> tuple[int, dict[str, Any], float]:
        """(status, JSON body, Retry-After seconds); status 0 when nothing came back."""
        async with self.slots:
            try:
                async with self.session.request(
                    method, self.base_url + path, headers=headers, json=body
                ) as resp:
                    try:
                        data = await resp.json(content_type=None)
                    except ValueError:
                        data = None
                    retry_after = _seconds(resp.headers.get("Retry-After"))
                    return resp.status, data if isinstance(data, dict) else {}, retry_after
            except (aiohttp.ClientError, TimeoutError):
                return 0, {}, 0.0

    async def customer(self, index: int) -> None:
        stats = self.stats
        user = f"customer-{index}"
        # Quantities 1..per_user_limit in turn, so sums are not just counts.
        quantity = 1 + index % self.per_user_limit
        headers = {"X-User-Id": user, "Idempotency-Key": secrets.token_urlsafe(12)}
        path = f"/api/v1/sales/{self.sale_id}/orders"
        for attempt in range(MAX_TRIES):
            status, body, retry_after = await self._request(
                "POST", path, headers, {"quantity": quantity}
            )
            stats.buy_requests += 1
            stats.last_buy_answer = self.now()
            if status == 202:
                stats.answers["admitted"] += 1
                order_id = str(body.get("order_id"))
                stats.admitted[order_id] = int(body.get("quantity", quantity))
                stats.last_admission = self.now()
                await self.follow(order_id, user)
                return
            code = "no_answer" if status == 0 else str(body.get("error", f"http_{status}"))
            stats.answers[code] += 1
            if status not in (0, 429, 503) or attempt == MAX_TRIES - 1:
                return
            stats.retries += 1
            # A customer does as told; with no Retry-After (no answer at all), a short pause.
            await asyncio.sleep(min(retry_after, MAX_RETRY_AFTER) if status else 0.1)

    async def follow(self, order_id: str, user: str) -> None:
        """Poll the order until it is no longer queued (or the gateway stops answering)."""
        delay, errors = POLL_FIRST, 0
        while errors < POLL_ERRORS:
            status, body, _ = await self._request(
                "GET", f"/api/v1/orders/{order_id}", {"X-User-Id": user}
            )
            self.stats.order_polls += 1
            if status == 200:
                errors = 0
                self.stats.finals[order_id] = str(body.get("status"))
                if body.get("status") != "queued":
                    return
            else:
                errors += 1
            await asyncio.sleep(delay)
            delay = min(POLL_CAP, delay * 2)


def _seconds(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value is not None else 1.0
    except ValueError:
        return 1.0


async def monitor(redis: Redis, sale_id: str, crowd: Crowd, done: asyncio.Event) -> None:
    """Watch the sale hash: when stock first hit 0, and when the backlog last came down
    to 0. Runs until *done* is set and the backlog is 0."""
    stats, backlog_seen = crowd.stats, False
    while True:
        try:
            sale = await read_summed(redis, sale_id)  # a sale with buckets: summed
            left, backlog = sale.get("stock_left"), sale.get("n_queued")
        except RedisError:
            return  # the drain wait will say what is wrong
        t = crowd.now()
        if stats.sold_out_at is None and left is not None and int(left) <= 0:
            stats.sold_out_at = t
        if backlog is not None and int(backlog) > 0:
            backlog_seen = True
        elif backlog_seen or stats.drained_at is None or stats.drained_at < stats.last_admission:
            # Empty again after orders waited, or since the latest admission.
            stats.drained_at, backlog_seen = t, False
        if done.is_set() and backlog is not None and int(backlog) == 0:
            return
        await asyncio.sleep(MONITOR_INTERVAL)


def crowd_check(stats: CrowdStats, orders: dict[str, dict[str, str]]) -> Check:
    """What the customers were told agrees with Redis: one order per 202, each final."""
    told, stored = set(stats.admitted), set(orders)
    finals = Counter(stats.finals.get(i, "never seen") for i in told)
    unfinished = sorted(i for i in told if stats.finals.get(i) not in ("confirmed", "failed"))
    seen = ", ".join(f"{s} {n}" for s, n in sorted(finals.items()))
    detail = f"{len(told)} orders answered 202, {len(stored)} order hashes; followed to: {seen}"
    problems = []
    if told - stored:
        problems.append(f"{len(told - stored)} answered 202 but not in Redis")
    if stored - told:
        problems.append(f"{len(stored - told)} in Redis but never answered")
    if unfinished:
        problems.append(f"{len(unfinished)} not seen final, e.g. {unfinished[0]}")
    if problems:
        return Check("crowd_matches_redis", False, "; ".join(problems) + f" ({detail})")
    return Check("crowd_matches_redis", True, detail)


@dataclass
class Outcome:
    stats: CrowdStats
    checks: list[Check]
    elapsed: float
    drained: bool
    problem: str | None = None


async def run_crowd(
    opts: DemoOptions, gateway: GatewayProcess, sale_id: str, sink_url: str, deadline: float
) -> Outcome:
    # the gateway's own client: redis:// or, for a cluster, redis+cluster://
    clients = connect(opts.redis_url or gateway.redis_url, pool_size=8, timeout=10)
    redis = clients.redis
    connector = aiohttp.TCPConnector(limit=opts.concurrency)
    timeout = aiohttp.ClientTimeout(total=15)
    problem: str | None = None
    drained = False
    # SIGTERM cancels the run (as Ctrl-C does, by asyncio.Runner): a Python
    # handler raising in the middle of the loop's callbacks would be swallowed.
    loop, me = asyncio.get_running_loop(), asyncio.current_task()
    sigterm = signal.getsignal(signal.SIGTERM)
    watching_sigterm = False
    if me is not None and threading.current_thread() is threading.main_thread():
        loop.add_signal_handler(signal.SIGTERM, me.cancel)
        watching_sigterm = True
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            crowd = Crowd(session, gateway.url, sale_id, opts.per_user_limit, opts.concurrency)
            done = asyncio.Event()
            watcher = asyncio.create_task(monitor(redis, sale_id, crowd, done))
            try:
                async with asyncio.timeout(max(1.0, deadline - time.monotonic())):
                    await crowd.run(opts.customers)
                    done.set()
                    await watcher
                    drained = True
            except TimeoutError:
                problem = f"the crowd and the drain did not finish within {opts.deadline:g} s"
            finally:
                done.set()
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
        elapsed = crowd.now()
        if not gateway.running():
            problem = f"the gateway died during the run: {gateway.tail(1)}"
        checks: list[Check] = []
        try:
            async with asyncio.timeout(CHECK_RESERVE):
                checks = await check_sale(redis, sale_id, sink_url=sink_url, require_drained=True)
                checks.append(crowd_check(crowd.stats, await load_sale_orders(redis, sale_id)))
        except (RedisError, OSError, CheckError, TimeoutError) as exc:
            problem = problem or f"the invariant checks could not run: {exc or 'timed out'}"
        return Outcome(crowd.stats, checks, elapsed, drained, problem)
    finally:
        if watching_sigterm:
            loop.remove_signal_handler(signal.SIGTERM)  # leaves SIG_DFL: put ours back
            signal.signal(signal.SIGTERM, sigterm)
        await clients.aclose()


def summary(opts: DemoOptions, outcome: Outcome) -> Iterator[str]:
    s = outcome.stats
    units = sum(s.admitted.values())
    rejected = {k: v for k, v in s.answers.items() if k != "admitted"}
    finals = Counter(s.finals.get(i, "unknown") for i in s.admitted)
    buy_time = s.last_buy_answer or outcome.elapsed
    rps = s.buy_requests / buy_time if buy_time > 0 else 0.0

    def at(t: float | None, what: str) -> str:
        return f"{t:.2f} s" if t is not None else what

    yield ""
    yield f"  customers         {opts.customers}"
    yield (
        f"  buy requests      {s.buy_requests} ({s.retries} retries after 429/503)"
        f" in {buy_time:.2f} s = {rps:,.0f} requests/s"
    )
    yield f"  admitted          {len(s.admitted)} orders, {units} of {opts.stock} units"
    yield "  rejected          " + (
        ", ".join(f"{k} {v}" for k, v in sorted(rejected.items(), key=lambda kv: -kv[1])) or "none"
    )
    yield (
        f"  orders            confirmed {finals['confirmed']}, failed {finals['failed']}"
        + "".join(f", {k} {v}" for k, v in finals.items() if k not in ("confirmed", "failed"))
    )
    yield f"  order polls       {s.order_polls}"
    yield f"  time to sell out  {at(s.sold_out_at, 'not sold out')} (first request -> stock 0)"
    drain = at(s.drained_at if outcome.drained else None, "not drained")
    yield f"  time to drain     {drain} (first request -> every order delivered)"
    yield f"  elapsed           {outcome.elapsed:.2f} s"
    yield ""
    yield "invariants (Redis and the SQLite sink, read directly):"
    for check in outcome.checks:
        yield "  " + check.line()


def run_demo(opts: DemoOptions, out: Callable[[str], None] = print) -> int:
    """Run the demo; 0 when every invariant held, 1 when one broke or the run
    failed midway, 2 when the gateway could not start, 130 on Ctrl-C."""
    started = time.monotonic()
    deadline = started + opts.deadline
    temp = opts.data_dir is None
    data_dir = Path(tempfile.mkdtemp(prefix="seckill-demo-")) if temp else opts.data_dir
    assert data_dir is not None
    data_dir = data_dir.resolve()
    token = secrets.token_urlsafe(24)
    # A reused --data-dir keeps its old sales: a fresh sale id each run.
    sale_id = f"demo-{secrets.token_hex(3)}"
    sink_url = f"sqlite:///{data_dir / 'orders.db'}"
    previous = _sigterm_as_interrupt()
    gateway: GatewayProcess | None = None
    code = 0
    try:
        out(
            f"seckill demo: {opts.customers} customers, stock {opts.stock}"
            f" (per-user limit {opts.per_user_limit}), {opts.processes} gateway"
            f" process(es), concurrency {opts.concurrency}"
        )
        # (No --redis-url: the embedded server; no --order-sink: SQLite under the data dir.)
        gateway = GatewayProcess(
            "--processes",
            str(opts.processes),
            "--data-dir",
            str(data_dir),
            *(["--redis-url", opts.redis_url] if opts.redis_url else []),
            admin_token=token,
            log_path=data_dir / "gateway.log",
        )
        try:
            gateway.wait_ready(max(1.0, min(deadline, time.monotonic() + 60) - time.monotonic()))
        except LaunchError as exc:
            raise DemoError(str(exc)) from None
        out(f"  gateway {gateway.url}, Redis at {gateway.shown_redis_url}, data in {data_dir}")
        try:
            call(
                gateway.url,
                token,
                "PUT",
                f"/admin/v1/sales/{sale_id}",
                {
                    "name": "seckill demo",
                    "stock": opts.stock,
                    "per_user_limit": opts.per_user_limit,
                    **({"buckets": opts.buckets} if opts.buckets > 1 else {}),
                },
            )
        except AdminClientError as exc:
            raise DemoError(f"creating the sale failed: {exc}") from None
        out(f"  sale {sale_id} created; the crowd arrives")
        outcome = uvloop.run(run_crowd(opts, gateway, sale_id, sink_url, deadline - CHECK_RESERVE))
        for line in summary(opts, outcome):
            out(line)
        broken = [c.name for c in outcome.checks if not c.ok]
        if outcome.problem:
            out(f"FAILED: {outcome.problem}")
            code = 1
        lost_redis = {"unavailable", "outcome_unknown"} & set(outcome.stats.answers)
        if outcome.problem or broken or lost_redis:
            out("the gateway's last words:")
            for line in gateway.output().splitlines()[-TAIL:]:
                out(f"  | {line}")
        if broken:
            out(f"FAILED: {len(broken)} invariant(s) broke: {', '.join(broken)}")
            code = 1
    except DemoError as exc:
        out(f"FAILED: {exc}")
        code = 2
    except (KeyboardInterrupt, asyncio.CancelledError):
        out("interrupted; stopping the gateway")
        code = 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        if gateway is not None:
            gateway_code = gateway.stop()
            if gateway_code != 0 and code == 0:
                out(f"FAILED: the gateway exited with code {gateway_code}: {gateway.tail(1)}")
                code = 1
        if temp:
            shutil.rmtree(data_dir, ignore_errors=True)
    if code == 0:
        out(f"OK: every invariant held ({time.monotonic() - started:.1f} s in all)")
    return code


def _sigterm_as_interrupt() -> Any:
    """SIGTERM takes the Ctrl-C path (the gateway is stopped, the temp dir removed).
    Only the main thread may set handlers; elsewhere nothing changes (None)."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, interrupt)
