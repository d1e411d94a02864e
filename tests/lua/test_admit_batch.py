"""Batched admission: the buys of one event-loop turn for one sale go to Redis
as one admit.lua call (``Scripts(..., admit_batch=N)``), and each buy is
decided exactly as if it had been a call of its own.

The proof of equivalence is hypothesis-driven: random sequences of buys
(users, quantities, Idempotency-Keys, token buckets, a backlog bound, time
moving on between batches) run once one call per buy (``admit_batch=1``) on one
sale, and once as batches on another sale; every answer and everything Redis
holds for the sale must be the same. Then hundreds of concurrent buys through
the batch path, NOSCRIPT, and a connection lost under a batch.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.exceptions import ConnectionError

from seckill.redis import keys
from seckill.redis.client import RedisClients, connect
from seckill.redis.scripts import Admit, AdmitResult, Scripts
from seckill.schemas import UNLIMITED, Limits
from tests.helpers.gateway import until

T0 = 1_700_000_000_000

LIMITS = (
    UNLIMITED,
    Limits(rate=1.0, burst=3),
    Limits(per_user_rate=0.5, per_user_burst=2),
    Limits(rate=2.0, burst=4, per_user_rate=1.0, per_user_burst=2),
)

buy = st.tuples(
    st.sampled_from(("u1", "u2", "u3")),
    st.integers(1, 3),
    st.sampled_from((None, None, "k1", "k2")),
)
batches = st.lists(
    st.tuples(st.integers(0, 1500), st.lists(buy, min_size=1, max_size=8)), min_size=1, max_size=6
)


async def admit_calls(redis: Redis) -> int:
    """EVALSHA calls the server has run so far (admit.lua's, in these tests)."""
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


class Twin:
    """One loop and two Scripts on the session's server: one call per buy, and
    batches."""

    _ids = itertools.count()

    def __init__(self, redis_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.clients: RedisClients = connect(redis_url)
        self.single = Scripts(self.clients, admit_batch=1)
        self.batched = Scripts(self.clients, admit_batch=64)
        self.tag = secrets.token_hex(3)

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    def sale_ids(self) -> tuple[str, str]:
        n = next(self._ids)
        return f"eq{self.tag}a{n}", f"eq{self.tag}b{n}"

    def close(self) -> None:
        self.run(self.clients.aclose())
        self.loop.close()


@pytest.fixture
def twin(redis_url: str) -> Any:
    made = Twin(redis_url)
    yield made
    made.close()


def normalised(results: list[AdmitResult], sale_id: str) -> list[tuple[Any, ...]]:
    """The answers with each order id replaced by its rank of first appearance
    (the two runs draw different ids)."""
    ranks: dict[str, int] = {}
    out = []
    for r in results:
        rank = ranks.setdefault(r.order_id, len(ranks)) if r.order_id else -1
        out.append(
            (r.outcome, rank, r.quantity, r.status, r.created_at_ms, r.stock_left, r.retry_after_ms)
        )
    return out


async def state(redis: Redis, sale_id: str, order_ids: list[str]) -> dict[str, Any]:
    """What Redis holds for a sale, its order ids replaced by their rank."""
    rank = {o: i for i, o in enumerate(dict.fromkeys(order_ids))}
    sale = await redis.hgetall(keys.sale(sale_id))
    for name in ("cfg_v", "created_at", "updated_at", "name"):
        sale.pop(name, None)
    stream = [
        {k: (rank.get(v, v) if k == "order_id" else v) for k, v in fields.items()}
        for _, fields in await redis.xrange(keys.stream(sale_id))
    ]
    idem = {}
    for user in ("u1", "u2", "u3"):
        for k in ("k1", "k2"):
            found = await redis.get(keys.idem(sale_id, user, k))
            idem[user, k] = None if found is None else rank[found]
    buckets = {
        "sale": await redis.hgetall(keys.bucket(sale_id)),
        **{u: await redis.hgetall(keys.user_bucket(sale_id, u)) for u in ("u1", "u2", "u3")},
    }
    orders = []
    for order_id in rank:
        order = await redis.hgetall(keys.order(sale_id, order_id))
        order.pop("order_id")
        order.pop("sale_id")
        orders.append(order)
    return {
        "sale": sale,
        "units": await redis.hgetall(keys.units(sale_id)),
        "stream": stream,
        "idem": idem,
        "buckets": buckets,
        "orders": orders,
    }


@settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    stock=st.integers(0, 12),
    limit=st.integers(1, 4),
    limits=st.sampled_from(LIMITS),
    backlog=st.sampled_from((0, 0, 3, 6)),
    plan=batches,
)
def test_a_batch_answers_and_writes_what_one_call_per_buy_does(
    twin: Twin,
    stock: int,
    limit: int,
    limits: Limits,
    backlog: int,
    plan: list[tuple[int, list[tuple[str, int, str | None]]]],
) -> None:
    one, many = twin.sale_ids()
    redis = twin.clients.redis

    def call(scripts: Scripts, sale: str, b: tuple[str, int, str | None], now: int) -> Any:
        user, qty, key = b
        return scripts.admit(
            sale, user, qty, idempotency_key=key, limits=limits, max_backlog=backlog, now_ms=now
        )

    async def go() -> None:
        for sale in (one, many):
            await twin.single.sale_put(sale, {"stock": stock, "per_user_limit": limit}, now_ms=T0)
        now = T0
        answers: dict[str, list[AdmitResult]] = {one: [], many: []}
        for step, buys in plan:
            now += step

            for b in buys:
                answers[one].append(await call(twin.single, one, b, now))
            before = await admit_calls(redis)
            answers[many] += await asyncio.gather(*(call(twin.batched, many, b, now) for b in buys))
            assert await admit_calls(redis) - before == 1  # the whole turn in one call
        assert normalised(answers[one], one) == normalised(answers[many], many)
        ids = {s: [r.order_id for r in answers[s] if r.order_id] for s in (one, many)}
        assert await state(redis, one, ids[one]) == await state(redis, many, ids[many])

    twin.run(go())


# -- hundreds at once --------------------------------------------------------------------


@pytest.fixture
async def batched(clients: RedisClients) -> Scripts:
    return Scripts(clients, admit_batch=64)


async def test_a_crowd_through_batches_sells_exactly_the_stock(
    batched: Scripts, redis: Redis
) -> None:
    await batched.sale_put("s", {"stock": 150, "per_user_limit": 2})
    before = await admit_calls(redis)
    # 400 users, each buying twice at once (the second may land in the same batch)
    users = [f"u{i}" for i in range(400)]
    results = await asyncio.gather(*(batched.admit("s", u, 1) for u in users + users))
    calls = await admit_calls(redis) - before
    counts = Counter(r.outcome for r in results)
    assert counts == {Admit.OK: 150, Admit.SOLD_OUT: 650}
    assert calls <= 800 // 64 + 2  # batched: 13 calls, not 800
    units = {u: int(n) for u, n in (await redis.hgetall(keys.units("s"))).items()}
    assert sum(units.values()) == 150 and max(units.values()) <= 2
    sale = await redis.hgetall(keys.sale("s"))
    assert (sale["stock_left"], sale["n_queued"]) == ("0", "150")
    assert await redis.xlen(keys.stream("s")) == 150
    ok = [r for r in results if r.outcome is Admit.OK]
    assert len({r.order_id for r in ok}) == 150
    assert sorted(r.stock_left for r in ok) == list(range(150))  # each saw the one before


async def test_per_user_limit_holds_within_one_batch(batched: Scripts, redis: Redis) -> None:
    await batched.sale_put("s", {"stock": 1000, "per_user_limit": 3})
    users = [f"u{i % 20}" for i in range(300)]  # 15 buys of 1 per user, in a few batches
    results = await asyncio.gather(*(batched.admit("s", u, 1) for u in users))
    counts = Counter(r.outcome for r in results)
    assert counts == {Admit.OK: 60, Admit.LIMIT_REACHED: 240}
    units = await redis.hgetall(keys.units("s"))
    assert units == {f"u{i}": "3" for i in range(20)}


async def test_idempotency_replays_in_one_batch_and_across_batches(
    batched: Scripts, redis: Redis
) -> None:
    await batched.sale_put("s", {"stock": 100, "per_user_limit": 5})

    def buys(n: int) -> list[Any]:
        return [batched.admit("s", f"u{i % 10}", 1, idempotency_key="k") for i in range(n)]

    first = await asyncio.gather(*buys(200))  # 20 buys per (user, key), in one turn
    later = await asyncio.gather(*buys(200))  # and again, in later batches
    by_user: dict[str, set[str]] = {}
    for i, r in enumerate(first + later):
        assert r.outcome in (Admit.OK, Admit.REPLAY)
        by_user.setdefault(f"u{i % 10}", set()).add(r.order_id)
    assert all(len(ids) == 1 for ids in by_user.values())  # one order per user and key
    assert Counter(r.outcome for r in first) == {Admit.OK: 10, Admit.REPLAY: 190}
    assert Counter(r.outcome for r in later) == {Admit.REPLAY: 200}
    assert await redis.xlen(keys.stream("s")) == 10
    assert await redis.hget(keys.sale("s"), "stock_left") == "90"


async def test_rate_limits_are_exact_within_a_batch(batched: Scripts, redis: Redis) -> None:
    """With a test clock nothing refills: the sale's burst is admitted and no
    more, and each user's burst of their own."""
    await batched.sale_put("s", {"stock": 1000, "per_user_limit": 10}, now_ms=T0)
    sale_burst = Limits(rate=1.0, burst=37)
    results = await asyncio.gather(
        *(batched.admit("s", f"u{i}", 1, limits=sale_burst, now_ms=T0) for i in range(300))
    )
    assert Counter(r.outcome for r in results) == {Admit.OK: 37, Admit.RATE_LIMITED: 263}
    user_burst = Limits(per_user_rate=0.5, per_user_burst=2)
    results = await asyncio.gather(
        *(
            batched.admit("s", f"v{i % 30}", 1, limits=user_burst, now_ms=T0 + 10)
            for i in range(300)
        )
    )
    assert Counter(r.outcome for r in results) == {Admit.OK: 60, Admit.RATE_LIMITED: 240}
    assert all(r.retry_after_ms == 2000 for r in results if r.outcome is Admit.RATE_LIMITED)


async def test_a_batch_is_capped(clients: RedisClients, redis: Redis) -> None:
    scripts = Scripts(clients, admit_batch=8)
    await scripts.sale_put("s", {"stock": 1000})
    before = await admit_calls(redis)
    results = await asyncio.gather(*(scripts.admit("s", f"u{i}", 1) for i in range(100)))
    assert all(r.outcome is Admit.OK for r in results)
    assert await admit_calls(redis) - before == 13  # 12 full batches of 8, then 4


async def test_batching_off_is_one_call_per_buy(clients: RedisClients, redis: Redis) -> None:
    scripts = Scripts(clients, admit_batch=1)
    await scripts.sale_put("s", {"stock": 1000})
    before = await admit_calls(redis)
    results = await asyncio.gather(*(scripts.admit("s", f"u{i}", 1) for i in range(50)))
    assert all(r.outcome is Admit.OK for r in results)
    assert await admit_calls(redis) - before == 50


async def test_a_lone_buy_is_sent_in_its_own_turn(batched: Scripts, redis: Redis) -> None:
    """No waiting for company: a single buy's batch is written in the loop
    turn after it was made, as a call of its own was."""
    await batched.sale_put("s", {"stock": 10})
    await batched.admit("s", "warm", 1)  # connected, script loaded
    conn = batched._pipe._conn
    assert conn is not None
    pending = asyncio.ensure_future(batched.admit("s", "u", 1))
    await asyncio.sleep(0)  # the buy runs and opens its batch
    await asyncio.sleep(0)  # the batch is sent and written
    assert len(conn.waiters) == 1 and not conn.buffer
    assert (await pending).outcome is Admit.OK


async def test_noscript_reloads_the_batch_once(batched: Scripts, redis: Redis) -> None:
    await batched.sale_put("s", {"stock": 5})
    await redis.script_flush()
    results = await asyncio.gather(*(batched.admit("s", f"u{i}", 1) for i in range(200)))
    assert Counter(r.outcome for r in results) == {Admit.OK: 5, Admit.SOLD_OUT: 195}
    assert await redis.xlen(keys.stream("s")) == 5


async def test_a_lost_connection_fails_the_whole_batch_and_never_resends_it(
    batched: Scripts, redis: Redis
) -> None:
    """The connection is cut after the batch was written, before its answer:
    every buy of it settles on its own (admit_outcome.lua) — admitted as its
    order, or LATE/UNKNOWN — and the batch is never sent again."""
    await batched.sale_put("s", {"stock": 100})
    await batched.admit("s", "warm", 1)
    conn = batched._pipe._conn
    assert conn is not None
    before = await admit_calls(redis)
    buys = [asyncio.ensure_future(batched.admit("s", f"u{i}", 1)) for i in range(30)]
    for _ in range(10):  # until the batch is written and its answer not yet read
        await asyncio.sleep(0)
        if conn.waiters and not conn.buffer:
            conn.fail(ConnectionError("cut"))
            break
    else:
        pytest.fail("the batch was never seen in flight")
    results = await asyncio.gather(*buys)
    assert {r.outcome for r in results} <= {Admit.OK, Admit.LATE, Admit.UNKNOWN}
    admitted = [r for r in results if r.outcome is Admit.OK]

    async def ran() -> bool:
        return await admit_calls(redis) - before == 1

    await until(ran, 5, "the batch to have run once")
    # Redis ran the batch it had received: each buy's order exists, and each
    # buy that settled OK names its own
    orders = {f["order_id"] for _, f in await redis.xrange(keys.stream("s"))}
    assert len(orders) == 31  # "warm" and the batch, once
    assert {r.order_id for r in admitted} <= orders
    assert await admit_calls(redis) - before == 1  # never re-sent
