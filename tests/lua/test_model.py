"""A model-based test of the Lua scripts: hypothesis drives the REAL scripts
(through :class:`seckill.redis.scripts.Scripts`, on the session's Redis)
with random sequences of admits (quantities, Idempotency-Keys, token
buckets, a backlog bound), confirms, releases, cancels, sale updates
(restock, limit, window), payments and expiries in a pay window (issue 15)
and time moving forward, against a small Python model of one sale.

After every step it checks that each script answered what the model
predicts, and the invariants of docs/API.md §6 on what Redis holds:
stock_left ≥ 0 and equal to the model's; stock_left + units of live
(queued|confirmed|paid) orders = stock_total; the units hash = each user's live
units, never above the per-user limit; the n_* counters = the orders per
status; every queued order is in the stream and every stream entry is a
known order; the consumer group's pending entries are the orders not yet
confirmed or released; an Idempotency-Key replay names the same order.

Each example sells a sale of its own (a fresh id), so nothing is flushed.
Deterministic (``derandomize``, no example database) and bounded
(:data:`SETTINGS`): about 10-20 s.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import secrets
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from seckill.pipeline.consumer import GROUP
from seckill.redis import keys
from seckill.redis.client import RedisClients, connect
from seckill.redis.scripts import Admit, Cancel, Paid, SalePut, Scripts
from seckill.schemas import UNLIMITED, Limits

T0 = 1_700_000_000_000  # the model's clock starts here (ms); the scripts take "now"

SETTINGS = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI never flakes on a new draw
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

#: token-bucket settings a step may switch to. Rates are low enough that a
#: bucket's real-time PEXPIRE (burst/rate + 1 s, at least 3 s here) never
#: fires within one example, so the model need not know the wall clock.
LIMIT_CHOICES = (
    UNLIMITED,
    Limits(rate=1.0, burst=2),
    Limits(rate=0.5, burst=3),
    Limits(per_user_rate=0.5, per_user_burst=2),
    Limits(rate=1.0, burst=3, per_user_rate=0.25, per_user_burst=2),
)
#: orders whose units are held (count against the stock and the user)
LIVE = ("queued", "confirmed", "paid")
#: orders a cancel takes back
CANCELLABLE = ("queued", "confirmed")


def lua_number(x: float) -> float:
    """A number as Lua 5.1's tostring writes it ("%.14g") and reads it back:
    admit.lua stores bucket tokens that way."""
    return float(f"{x:.14g}")


@dataclass
class Bucket:
    tokens: float
    ts: int


@dataclass
class ModelOrder:
    user: str
    quantity: int
    status: str
    entry_id: str
    acked: bool = False
    #: ms: the pay deadline once confirmed in a sale with a pay window
    deadline: int | None = None


@dataclass
class ModelSale:
    total: int
    left: int
    limit: int
    starts_at: int
    ends_at: int | None
    #: the highest per-user limit ever in force: lowering the limit later
    #: does not take units away from anyone
    limit_high: int
    #: the pay window, seconds (None = none)
    window: int | None = None
    orders: dict[str, ModelOrder] = field(default_factory=dict)
    idem: dict[tuple[str, str], str] = field(default_factory=dict)
    buckets: dict[str, Bucket] = field(default_factory=dict)

    def held(self, user: str) -> int:
        return sum(o.quantity for o in self.orders.values() if o.user == user and o.status in LIVE)

    def counts(self) -> Counter[str]:
        return Counter(o.status for o in self.orders.values())


class Runner:
    """One event loop and one set of clients for a whole hypothesis run: each
    step is a coroutine run to completion on it."""

    _ids = itertools.count()

    def __init__(self, redis_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.clients: RedisClients = connect(redis_url)
        self.scripts = Scripts(self.clients)
        self.tag = secrets.token_hex(3)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def new_sale_id(self) -> str:
        return f"model{self.tag}n{next(self._ids)}"

    def close(self) -> None:
        self.run(self.clients.aclose())
        self.loop.close()


def machine_for(runner: Runner, users: tuple[str, ...], idem_keys: tuple[str, ...]) -> type:
    """The state machine class, bound to *runner*, drawing users and
    Idempotency-Keys from the given sets (small: collisions are the point)."""

    class SaleMachine(RuleBasedStateMachine):
        sale: ModelSale

        def __init__(self) -> None:
            super().__init__()
            self.sale_id = runner.new_sale_id()
            self.now = T0
            self.limits = UNLIMITED
            self.backlog_bound = 0
            self.scripts = runner.scripts
            self.redis = runner.clients.redis

        # -- set-up and tear-down -------------------------------------------------

        @initialize(
            stock=st.integers(0, 10),
            limit=st.integers(1, 3),
            window=st.sampled_from([None, 1, 3]),
        )
        def create_sale(self, stock: int, limit: int, window: int | None) -> None:
            fields: dict[str, Any] = {"stock": stock, "per_user_limit": limit}
            if window is not None:
                fields["pay_window_s"] = window
            result = runner.run(self.scripts.sale_put(self.sale_id, fields, now_ms=self.now))
            assert result.outcome is SalePut.CREATED
            self.sale = ModelSale(stock, stock, limit, self.now, None, limit, window)
            # no sale, no order: answered, and nothing written
            nobody = runner.run(self.scripts.admit(f"{self.sale_id}x", "u", 1, now_ms=self.now))
            assert nobody.outcome is Admit.NOT_FOUND
            code, _ = runner.run(self.scripts.cancel(self.sale_id, f"{self.sale_id}.nosuchorder0"))
            assert code is Cancel.NOT_FOUND
            # the pipeline's group, so that confirm/release acknowledge real entries
            runner.run(
                self.redis.xgroup_create(keys.stream(self.sale_id), GROUP, id="$", mkstream=True)
            )

        def teardown(self) -> None:
            async def drop() -> None:
                pattern = f"{keys.PREFIX}:{{{self.sale_id}}}:*"
                names = [name async for name in self.redis.scan_iter(match=pattern, count=500)]
                if names:
                    await self.redis.delete(*names)

            runner.run(drop())

        # -- time and configuration -----------------------------------------------

        @rule(ms=st.sampled_from([1, 250, 999, 1000, 2500, 5000]))
        def time_passes(self, ms: int) -> None:
            self.now += ms

        @rule(limits=st.sampled_from(LIMIT_CHOICES))
        def set_limits(self, limits: Limits) -> None:
            self.limits = limits

        @rule(bound=st.sampled_from([0, 0, 1, 3]))
        def set_backlog_bound(self, bound: int) -> None:
            self.backlog_bound = bound

        # -- the buy --------------------------------------------------------------

        # The buy is three rules (hypothesis picks rules evenly): most steps buy.
        @rule(user=st.sampled_from(users), quantity=st.integers(1, 2))
        def admit(self, user: str, quantity: int) -> None:
            self._admit(user, quantity, None)

        @rule(user=st.sampled_from(users), quantity=st.integers(1, 4))
        def admit_any_quantity(self, user: str, quantity: int) -> None:
            self._admit(user, quantity, None)

        @rule(
            user=st.sampled_from(users),
            quantity=st.integers(1, 2),
            idem_key=st.sampled_from(idem_keys),
        )
        def admit_with_key(self, user: str, quantity: int, idem_key: str) -> None:
            self._admit(user, quantity, idem_key)

        def _admit(self, user: str, quantity: int, idem_key: str | None) -> None:
            expected = self._predict_admit(user, quantity, idem_key)
            r = runner.run(
                self.scripts.admit(
                    self.sale_id,
                    user,
                    quantity,
                    idempotency_key=idem_key,
                    limits=self.limits,
                    max_backlog=self.backlog_bound,
                    now_ms=self.now,
                )
            )
            outcome, detail = expected
            assert r.outcome is outcome, f"admit({user}, {quantity}, {idem_key}): {r} ≠ {expected}"
            if outcome is Admit.REPLAY:
                first = self.sale.orders[detail]
                assert (r.order_id, r.quantity, r.status) == (detail, first.quantity, first.status)
            elif outcome is Admit.RATE_LIMITED:
                assert r.retry_after_ms == detail
            elif outcome is Admit.SOLD_OUT:
                assert r.stock_left == self.sale.left
            elif outcome is Admit.OK:
                assert r.stock_left == self.sale.left - quantity
                assert r.order_id not in self.sale.orders
                self._admitted(r.order_id, user, quantity, idem_key)

        def _predict_admit(self, user: str, qty: int, idem_key: str | None) -> tuple[Admit, Any]:
            """What admit.lua must answer, in the order of docs/API.md §4 (checks 7-15);
            charges the model's buckets as the script charges Redis's."""
            s = self.sale
            if idem_key is not None and (user, idem_key) in s.idem:
                return Admit.REPLAY, s.idem[(user, idem_key)]
            if self.now < s.starts_at:
                return Admit.NOT_STARTED, None
            if s.ends_at is not None and self.now >= s.ends_at:
                return Admit.ENDED, None
            if qty > s.limit:
                return Admit.BAD_QUANTITY, None
            wanted = []
            if self.limits.rate is not None:
                wanted.append(("sale", self.limits.rate, self.limits.burst))
            if self.limits.per_user_rate is not None:
                wanted.append(
                    (f"user:{user}", self.limits.per_user_rate, self.limits.per_user_burst)
                )
            tokens = {name: self._refill(name, rate, burst) for name, rate, burst in wanted}
            wait_ms = 0
            for name, rate, _ in wanted:
                if tokens[name] < 1:
                    need = math.ceil((1 - tokens[name]) * 1000 / rate)
                    wait_ms = max(wait_ms, min(3_600_000, need))
            if wait_ms > 0:
                return Admit.RATE_LIMITED, wait_ms
            for name, _, _ in wanted:
                s.buckets[name] = Bucket(lua_number(tokens[name] - 1), self.now)
            if s.held(user) + qty > s.limit:
                return Admit.LIMIT_REACHED, None
            if s.left < qty:
                return Admit.SOLD_OUT, None
            if self.backlog_bound > 0 and s.counts()["queued"] >= self.backlog_bound:
                return Admit.OVERLOADED, None
            return Admit.OK, None

        def _refill(self, name: str, rate: float, burst: int) -> float:
            b = self.sale.buckets.get(name)
            if b is None:
                return float(burst)
            tokens = b.tokens
            if self.now > b.ts:
                tokens += (self.now - b.ts) * rate / 1000
            return min(tokens, float(burst))

        def _admitted(self, order_id: str, user: str, qty: int, idem_key: str | None) -> None:
            stream = keys.stream(self.sale_id)
            last = runner.run(self.redis.xrevrange(stream, count=1))
            entry_id, fields = last[0]
            assert fields["order_id"] == order_id, "the new order is not the stream's last entry"
            # the pipeline reads it: it becomes pending in the group until acknowledged
            read = runner.run(self.redis.xreadgroup(GROUP, "model", {stream: ">"}, count=100))
            # a status event read with it (issue 15) goes to the sink and is acknowledged
            for _, entries in read or []:
                for event_id, event in entries:
                    if "status" in event:
                        runner.run(self.redis.xack(stream, GROUP, event_id))
                        runner.run(self.redis.xdel(stream, event_id))
            self.sale.left -= qty
            self.sale.orders[order_id] = ModelOrder(user, qty, "queued", entry_id)
            if idem_key is not None:
                self.sale.idem[(user, idem_key)] = order_id

        # -- the pipeline's outcomes and the operator's cancel ----------------------

        def _pick(self, index: int) -> tuple[str, ModelOrder]:
            ids = sorted(self.sale.orders)
            order_id = ids[index % len(ids)]
            return order_id, self.sale.orders[order_id]

        @precondition(lambda self: bool(self.sale.orders))
        @rule(index=st.integers(0, 63))
        def confirm(self, index: int) -> None:
            order_id, o = self._pick(index)
            changed = runner.run(
                self.scripts.confirm(self.sale_id, order_id, GROUP, o.entry_id, now_ms=self.now)
            )
            assert changed == (o.status == "queued"), f"confirm of a {o.status} order: {changed}"
            if o.status == "queued":
                o.status = "confirmed"
                if self.sale.window is not None:
                    o.deadline = self.now + self.sale.window * 1000
            o.acked = True

        @precondition(lambda self: bool(self.sale.orders))
        @rule(index=st.integers(0, 63))
        def release(self, index: int) -> None:
            order_id, o = self._pick(index)
            changed = runner.run(self.scripts.release(self.sale_id, order_id, GROUP, o.entry_id))
            assert changed == (o.status == "queued"), f"release of a {o.status} order: {changed}"
            if o.status == "queued":
                o.status = "failed"
                self.sale.left += o.quantity
            o.acked = True

        @precondition(lambda self: bool(self.sale.orders))
        @rule(index=st.integers(0, 63))
        def cancel(self, index: int) -> None:
            order_id, o = self._pick(index)
            code, after = runner.run(self.scripts.cancel(self.sale_id, order_id))
            if o.status in CANCELLABLE:
                assert code is Cancel.CANCELLED
                o.status = "cancelled"
                self.sale.left += o.quantity
            else:
                assert code is Cancel.NOT_CANCELLABLE
            assert after["status"] == o.status

        # -- the pay window (paid.lua, expire.lua) ---------------------------------

        @precondition(
            lambda self: any(
                o.status == "confirmed" and o.deadline for o in self.sale.orders.values()
            )
        )
        @rule(index=st.integers(0, 63), off=st.sampled_from([-1, 0, 1]), pay_first=st.booleans())
        def at_the_deadline(self, index: int, off: int, pay_first: bool) -> None:
            """Time moves to a confirmed order's deadline (1 ms before, at, or
            after it: never back), then a paid and an expiry race for it."""
            waiting = sorted(
                i for i, o in self.sale.orders.items() if o.status == "confirmed" and o.deadline
            )
            order_id = waiting[index % len(waiting)]
            deadline = self.sale.orders[order_id].deadline
            assert deadline is not None
            self.now = max(self.now, deadline + off)
            index = sorted(self.sale.orders).index(order_id)
            for step in (self.pay, self.expire) if pay_first else (self.expire, self.pay):
                step(index)

        @precondition(lambda self: bool(self.sale.orders))
        @rule(index=st.integers(0, 63))
        def pay(self, index: int) -> None:
            order_id, o = self._pick(index)
            code, after = runner.run(self.scripts.paid(self.sale_id, order_id, now_ms=self.now))
            due = o.deadline is not None and self.now >= o.deadline
            if o.status == "confirmed" and not due:
                assert code is Paid.PAID
                o.status = "paid"
            elif o.status == "paid":
                assert code is Paid.ALREADY_PAID
            elif o.status in ("confirmed", "expired"):
                assert code is Paid.EXPIRED
            else:
                assert code is Paid.NOT_PAYABLE
            assert after["status"] == o.status

        @precondition(lambda self: bool(self.sale.orders))
        @rule(index=st.integers(0, 63))
        def expire(self, index: int) -> None:
            order_id, o = self._pick(index)
            changed = runner.run(self.scripts.expire(self.sale_id, order_id, now_ms=self.now))
            due = o.status == "confirmed" and o.deadline is not None and self.now >= o.deadline
            assert changed == due, f"expire of a {o.status} order (deadline {o.deadline})"
            if due:
                o.status = "expired"
                self.sale.left += o.quantity

        # -- the operator's sale updates (sale_put.lua) ----------------------------

        @rule(stock=st.integers(0, 12))
        def restock(self, stock: int) -> None:
            s = self.sale
            sold = s.total - s.left
            r = runner.run(self.scripts.sale_put(self.sale_id, {"stock": stock}, now_ms=self.now))
            if stock < sold:
                assert (r.outcome, r.sold) == (SalePut.STOCK_CONFLICT, sold)
                return
            assert r.outcome is SalePut.UPDATED
            s.left += stock - s.total
            s.total = stock
            assert (int(r.sale["stock_total"]), int(r.sale["stock_left"])) == (s.total, s.left)

        @rule(limit=st.integers(1, 4))
        def change_limit(self, limit: int) -> None:
            r = runner.run(
                self.scripts.sale_put(self.sale_id, {"per_user_limit": limit}, now_ms=self.now)
            )
            assert r.outcome is SalePut.UPDATED
            self.sale.limit = limit
            self.sale.limit_high = max(self.sale.limit_high, limit)

        @rule(
            start=st.sampled_from([-3000, -1, 0, 1, 2000]),
            end=st.sampled_from([None, -1000, 0, 1, 1500, 6000]),
        )
        def change_window(self, start: int, end: int | None) -> None:
            starts_at = self.now + start
            ends_at = None if end is None else self.now + end
            r = runner.run(
                self.scripts.sale_put(
                    self.sale_id, {"starts_at": starts_at, "ends_at": ends_at}, now_ms=self.now
                )
            )
            if ends_at is not None and ends_at <= starts_at:
                assert r.outcome is SalePut.BAD_WINDOW
                return
            assert r.outcome is SalePut.UPDATED
            self.sale.starts_at, self.sale.ends_at = starts_at, ends_at

        # -- docs/API.md §6, on what Redis holds, after every step -------------------

        @invariant()
        def redis_agrees_with_the_model_and_section_6(self) -> None:
            if not hasattr(self, "sale"):
                return
            s = self.sale
            sale_h, units, stream, pending, orders = runner.run(self._read_state())

            left, total = int(sale_h["stock_left"]), int(sale_h["stock_total"])
            assert left >= 0, f"stock_left {left} < 0"
            assert (total, left) == (s.total, s.left), (
                f"stock {total}/{left}, model {s.total}/{s.left}"
            )
            assert int(sale_h["per_user_limit"]) == s.limit
            assert int(sale_h["starts_at"]) == s.starts_at
            assert (sale_h["ends_at"] or None) == (None if s.ends_at is None else str(s.ends_at))

            held: Counter[str] = Counter()
            by_status: Counter[str] = Counter()
            for order_id, o in orders.items():
                mo = s.orders[order_id]
                assert (o["user_id"], int(o["quantity"]), o["status"]) == (
                    mo.user,
                    mo.quantity,
                    mo.status,
                ), f"order {order_id}: Redis {o}, model {mo}"
                by_status[o["status"]] += 1
                if o["status"] in LIVE:
                    held[o["user_id"]] += int(o["quantity"])
            # 1. never oversold: live orders hold exactly what left the stock
            assert left + sum(held.values()) == total, (
                f"stock_left {left} + live units {sum(held.values())} ≠ stock_total {total}"
            )
            # 2. per user: the units hash (what admit decides by) = the user's live orders
            recorded = {u: int(n) for u, n in units.items() if int(n) != 0}
            assert recorded == dict(held), f"units hash {recorded} ≠ live orders {dict(held)}"
            assert all(n <= s.limit_high for n in held.values()), f"over the limit: {held}"
            # counters: n_<status> = orders in that status
            for status in ("queued", "confirmed", "failed", "cancelled", "paid", "expired"):
                assert int(sale_h.get(f"n_{status}", 0)) == by_status[status], (
                    f"n_{status} {sale_h.get(f'n_{status}')} ≠ {by_status[status]} orders"
                )
            # 3. every queued order is in the stream; every entry is one known order
            # (a status event for the sink, issue 15: one per order paid,
            # expired, or cancelled after its confirmation — each its status)
            events = Counter((f["order_id"], f["status"]) for _, f in stream if "status" in f)
            assert all(n == 1 for n in events.values()), f"a status event twice: {events}"
            assert all(
                s.orders[i].status == st and (st != "cancelled" or orders[i].get("confirmed_at"))
                for i, st in events
            ), f"a status event that is not its order's final status: {events}"
            # the deadline set: exactly the confirmed orders with a deadline
            deadlines = {i for i, o in s.orders.items() if o.status == "confirmed" and o.deadline}
            assert set(self.deadline_set) == deadlines, (self.deadline_set, deadlines)
            stream = [(e, f) for e, f in stream if "status" not in f]
            in_stream = Counter(fields["order_id"] for _, fields in stream)
            assert all(n == 1 for n in in_stream.values()), f"an order twice: {in_stream}"
            assert set(in_stream) <= set(s.orders), "a stream entry for an unknown order"
            queued = {i for i, o in s.orders.items() if o.status == "queued"}
            assert queued <= set(in_stream), (
                f"queued orders not in the stream: {queued - set(in_stream)}"
            )
            # pending in the group = read and not yet confirmed/released
            assert pending == sum(1 for o in s.orders.values() if not o.acked)
            # 4. idempotent: one key of one user names one order, of that user
            for (user, _), order_id in s.idem.items():
                assert s.orders[order_id].user == user

        async def _read_state(self) -> tuple[Any, ...]:
            r, sid = self.redis, self.sale_id
            pipe = r.pipeline(transaction=False)
            pipe.hgetall(keys.sale(sid))
            pipe.hgetall(keys.units(sid))
            pipe.xrange(keys.stream(sid))
            pipe.xpending(keys.stream(sid), GROUP)
            pipe.zrange(keys.pay_deadlines(sid), 0, -1)
            ids = sorted(self.sale.orders)
            for order_id in ids:
                pipe.hgetall(keys.order(sid, order_id))
            sale_h, units, stream, pending, self.deadline_set, *hashes = await pipe.execute()
            assert all(hashes), "an order hash is missing"
            return (
                sale_h,
                units,
                stream,
                int(pending["pending"]),
                dict(zip(ids, hashes, strict=True)),
            )

    return SaleMachine


@pytest.fixture
def runner(redis_url: str) -> Any:
    made = Runner(redis_url)
    yield made
    made.close()


def test_scripts_follow_the_model(runner: Runner) -> None:
    """Users and keys without separators: the scripts must match the model
    step for step and keep every invariant."""
    machine = machine_for(runner, ("u1", "u2", "u3"), ("k1", "k2"))
    run_state_machine_as_test(machine, settings=SETTINGS)


def test_idempotency_keys_of_users_whose_ids_contain_colons(runner: Runner) -> None:
    """The same machine with ids that contain the old key separator: no two
    (user, key) pairs may share an order (issue 12: user ``a`` with key
    ``b:c`` and user ``a:b`` with key ``c`` once shared one Redis key, and the
    second got the first one's order as a replay; this run found it at once)."""
    machine = machine_for(runner, ("a", "a:b"), ("c", "b:c"))
    run_state_machine_as_test(machine, settings=settings(SETTINGS, max_examples=60))
