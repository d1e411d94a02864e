"""lua/admit.lua and lua/sale_put.lua called directly against a real server."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest
from redis.asyncio import Redis

from seckill.core.limits import Limits
from seckill.redis import keys
from seckill.redis.autopipe import NotSent
from seckill.redis.client import connect
from seckill.redis.scripts import Admit, SalePut, Scripts, lua_source

T0 = 1_700_000_000_000  # a fixed "now" (2023) in ms for deterministic windows


async def make_sale(scripts: Scripts, sale_id: str = "s", **fields: object) -> dict[str, str]:
    result = await scripts.sale_put(sale_id, {"stock": 10, **fields}, now_ms=T0)
    assert result.outcome is SalePut.CREATED
    return result.sale


async def test_ok_writes_order_stream_and_counters(scripts: Scripts, redis: Redis) -> None:
    await make_sale(scripts, stock=5)
    r = await scripts.admit("s", "alice", 1, now_ms=T0)
    assert r.outcome is Admit.OK
    assert r.stock_left == 4
    assert r.order_id.startswith("s.") and keys.sale_of_order(r.order_id) == "s"
    order = await redis.hgetall(keys.order("s", r.order_id))
    assert order == {
        "order_id": r.order_id,
        "sale_id": "s",
        "user_id": "alice",
        "quantity": "1",
        "status": "queued",
        "created_at": str(T0),
    }
    entries = await redis.xrange(keys.stream("s"))
    assert [e[1] for e in entries] == [
        {"order_id": r.order_id, "user_id": "alice", "quantity": "1", "created_at": str(T0)}
    ]
    assert await redis.hget(keys.units("s"), "alice") == "1"
    sale = await redis.hgetall(keys.sale("s"))
    assert (sale["stock_left"], sale["n_queued"]) == ("4", "1")
    assert "backlog" not in sale  # the backlog is n_queued, not a field of its own


async def test_not_found(scripts: Scripts) -> None:
    assert (await scripts.admit("nope", "alice", 1)).outcome is Admit.NOT_FOUND


async def test_window(scripts: Scripts) -> None:
    await make_sale(scripts, starts_at=T0 + 1000, ends_at=T0 + 2000)
    assert (await scripts.admit("s", "u", 1, now_ms=T0 + 999)).outcome is Admit.NOT_STARTED
    assert (await scripts.admit("s", "u", 1, now_ms=T0 + 1000)).outcome is Admit.OK
    assert (await scripts.admit("s", "v", 1, now_ms=T0 + 2000)).outcome is Admit.ENDED


async def test_window_uses_redis_time(scripts: Scripts) -> None:
    await make_sale(scripts, starts_at=T0 * 2)  # far in the future by the server's clock
    assert (await scripts.admit("s", "u", 1)).outcome is Admit.NOT_STARTED


async def test_quantity_and_per_user_limit(scripts: Scripts, redis: Redis) -> None:
    await make_sale(scripts, stock=100, per_user_limit=3)
    assert (await scripts.admit("s", "u", 4, now_ms=T0)).outcome is Admit.BAD_QUANTITY
    assert (await scripts.admit("s", "u", 2, now_ms=T0)).outcome is Admit.OK
    assert (await scripts.admit("s", "u", 2, now_ms=T0)).outcome is Admit.LIMIT_REACHED
    assert (await scripts.admit("s", "u", 1, now_ms=T0)).outcome is Admit.OK
    assert (await scripts.admit("s", "u", 1, now_ms=T0)).outcome is Admit.LIMIT_REACHED
    assert await redis.hget(keys.units("s"), "u") == "3"
    assert await redis.hget(keys.sale("s"), "stock_left") == "97"


async def test_sold_out_keeps_partial_stock(scripts: Scripts) -> None:
    await make_sale(scripts, stock=2, per_user_limit=3)
    r = await scripts.admit("s", "u", 3, now_ms=T0)
    assert (r.outcome, r.stock_left) == (Admit.SOLD_OUT, 2)
    assert (await scripts.admit("s", "u", 2, now_ms=T0)).stock_left == 0
    r = await scripts.admit("s", "v", 1, now_ms=T0)
    assert (r.outcome, r.stock_left) == (Admit.SOLD_OUT, 0)


async def test_idempotency_replay(scripts: Scripts, redis: Redis) -> None:
    await make_sale(scripts, stock=5, per_user_limit=2)
    first = await scripts.admit("s", "u", 1, idempotency_key="k1", now_ms=T0)
    again = await scripts.admit("s", "u", 1, idempotency_key="k1", now_ms=T0)
    assert again.outcome is Admit.REPLAY
    assert (again.order_id, again.quantity, again.status) == (first.order_id, 1, "queued")
    other_user = await scripts.admit("s", "v", 1, idempotency_key="k1", now_ms=T0)
    assert other_user.outcome is Admit.OK and other_user.order_id != first.order_id
    assert await redis.xlen(keys.stream("s")) == 2
    assert 0 < await redis.ttl(keys.idem("s", "u", "k1")) <= 86_400


async def test_idempotency_keys_of_two_users_never_collide(scripts: Scripts, redis: Redis) -> None:
    """User `a` with key `b:c` and user `a:b` with key `c` once shared one Redis
    key: the second got the first's order. Now each pair has its own key."""
    await make_sale(scripts, stock=5)
    first = await scripts.admit("s", "a", 1, idempotency_key="b:c", now_ms=T0)
    second = await scripts.admit("s", "a:b", 1, idempotency_key="c", now_ms=T0)
    assert (first.outcome, second.outcome) == (Admit.OK, Admit.OK)
    assert second.order_id != first.order_id
    assert keys.idem("s", "a", "b:c") != keys.idem("s", "a:b", "c")
    assert await redis.get(keys.idem("s", "a", "b:c")) == first.order_id
    assert await redis.get(keys.idem("s", "a:b", "c")) == second.order_id
    # each replay answers its own user's order
    again = await scripts.admit("s", "a:b", 1, idempotency_key="c", now_ms=T0)
    assert (again.outcome, again.order_id) == (Admit.REPLAY, second.order_id)
    again = await scripts.admit("s", "a", 1, idempotency_key="b:c", now_ms=T0)
    assert (again.outcome, again.order_id) == (Admit.REPLAY, first.order_id)
    assert await redis.xlen(keys.stream("s")) == 2


def test_idempotency_key_layout_is_one_to_one() -> None:
    users = ["a", "a:b", "a:b:c", "1", "1:a", "ab", "x" * 64]
    key_list = ["b:c", "c", ":", "a:b", "1:a", "k" * 64, "b"]
    made = {keys.idem("s", u, k) for u in users for k in key_list}
    assert len(made) == len(users) * len(key_list)
    # and no key of the new layout is one of the old layout
    assert not made & {keys.legacy_idem("s", u, k) for u in users for k in key_list}


async def test_an_old_layout_key_replays_only_for_its_own_user(
    scripts: Scripts, redis: Redis
) -> None:
    """Upgrade: a key written by the old layout (user `a`, key `b:c`) still
    replays for `a`; user `a:b` with key `c` maps to the same old key but is
    not answered with `a`'s order: that buy is a fresh one."""
    await make_sale(scripts, stock=5)
    old = await scripts.admit("s", "a", 1, now_ms=T0)  # as the old version admitted it
    await redis.set(keys.legacy_idem("s", "a", "b:c"), old.order_id, ex=86_400)
    replay = await scripts.admit("s", "a", 1, idempotency_key="b:c", now_ms=T0)
    assert (replay.outcome, replay.order_id) == (Admit.REPLAY, old.order_id)
    other = await scripts.admit("s", "a:b", 1, idempotency_key="c", now_ms=T0)
    assert other.outcome is Admit.OK and other.order_id != old.order_id
    # the fresh buy took a key of the new layout; the old key is left to expire
    assert await redis.get(keys.idem("s", "a:b", "c")) == other.order_id
    assert await redis.get(keys.legacy_idem("s", "a", "b:c")) == old.order_id
    again = await scripts.admit("s", "a:b", 1, idempotency_key="c", now_ms=T0)
    assert (again.outcome, again.order_id) == (Admit.REPLAY, other.order_id)
    assert await redis.xlen(keys.stream("s")) == 2


async def test_a_key_naming_another_users_order_is_no_replay(
    scripts: Scripts, redis: Redis
) -> None:
    """Whatever a key holds, a replay answers only the order's own user."""
    await make_sale(scripts, stock=5)
    alice = await scripts.admit("s", "alice", 1, idempotency_key="k", now_ms=T0)
    await redis.set(keys.idem("s", "bob", "k"), alice.order_id)  # planted
    bob = await scripts.admit("s", "bob", 1, idempotency_key="k", now_ms=T0)
    assert bob.outcome is Admit.OK and bob.order_id != alice.order_id
    assert await redis.get(keys.idem("s", "bob", "k")) == bob.order_id


async def test_past_its_deadline_admit_changes_nothing(scripts: Scripts, redis: Redis) -> None:
    await make_sale(scripts, stock=5)
    limits = Limits(rate=1.0, burst=1, per_user_rate=1.0, per_user_burst=1)
    late = await scripts.admit(
        "s", "u", 1, idempotency_key="k", limits=limits, now_ms=T0, deadline_ms=T0 - 1
    )
    assert late.outcome is Admit.LATE
    assert await redis.hget(keys.sale("s"), "stock_left") == "5"
    assert await redis.xlen(keys.stream("s")) == 0
    assert await redis.hgetall(keys.units("s")) == {}
    assert await redis.exists(keys.idem("s", "u", "k"), keys.bucket("s")) == 0
    assert await redis.exists(keys.order("s", late.order_id)) == 0
    # on time (the deadline itself included) it admits, and a replay answers
    # whatever the deadline: it changes nothing
    ok = await scripts.admit("s", "u", 1, idempotency_key="k", now_ms=T0, deadline_ms=T0)
    assert ok.outcome is Admit.OK
    replay = await scripts.admit("s", "u", 1, idempotency_key="k", now_ms=T0, deadline_ms=0)
    assert (replay.outcome, replay.order_id) == (Admit.REPLAY, ok.order_id)


async def test_the_default_deadline_is_by_redis_clock(scripts: Scripts) -> None:
    """Without a test clock the script reads TIME and the deadline is set from
    the pipeline's estimate of Redis's clock: a buy on time admits."""
    await make_sale(scripts, stock=5)
    assert (await scripts.admit("s", "u", 1)).outcome is Admit.OK
    r = await scripts.admit("s", "v", 1, deadline_ms=int(time.time() * 1000) - 60_000)
    assert r.outcome is Admit.LATE


# -- settling an admit whose answer was lost (Scripts._settle_admit, admit_outcome.lua) ----


async def test_a_lost_answer_of_an_admitted_buy_settles_as_its_order(
    scripts: Scripts, redis: Redis
) -> None:
    await make_sale(scripts, stock=5)
    ok = await scripts.admit("s", "u", 1)
    await redis.hset(keys.order("s", ok.order_id), "status", "confirmed")
    settled = await scripts._settle_admit("s", ok.order_id, 0, TimeoutError("lost"))
    assert (settled.outcome, settled.order_id) == (Admit.OK, ok.order_id)
    assert (settled.quantity, settled.status, settled.created_at_ms) == (
        1,
        "confirmed",
        ok.created_at_ms,
    )


async def test_a_lost_answer_without_an_order_settles_late_once_the_deadline_passed(
    scripts: Scripts,
) -> None:
    """Before its deadline the order could still be made: settling waits for the
    deadline (by Redis's clock), then answers LATE."""
    await make_sale(scripts, stock=5)
    order_id = "s.abcdefgh00000001"
    assert (await scripts._settle_admit("s", order_id, 0, TimeoutError())).outcome is Admit.LATE
    started = time.monotonic()
    deadline = int(await _redis_ms(scripts)) + 300
    settled = await scripts._settle_admit("s", order_id, deadline, TimeoutError())
    assert settled.outcome is Admit.LATE
    assert time.monotonic() - started >= 0.25  # it waited for the deadline
    # and a late run of that admit does nothing
    late = await scripts.admit("s", "u", 1, deadline_ms=deadline)
    assert late.outcome is Admit.LATE


async def test_a_lost_answer_of_a_buy_whose_key_names_an_order_settles_as_that_order(
    scripts: Scripts, redis: Redis
) -> None:
    """A retry with an Idempotency-Key whose answer was lost: its own order id was
    never created, but the key names the user's order, as a replay would say."""
    await make_sale(scripts, stock=5)
    first = await scripts.admit("s", "u", 1, idempotency_key="k")
    lost_id = "s.abcdefgh00000002"

    def idem(user: str, key: str) -> tuple[str, str, str]:
        return user, keys.idem("s", user, key), keys.legacy_idem("s", user, key)

    settled = await scripts._settle_admit("s", lost_id, 0, TimeoutError(), idem("u", "k"))
    assert (settled.outcome, settled.order_id) == (Admit.REPLAY, first.order_id)
    assert (settled.quantity, settled.status) == (1, "queued")
    # another user's key never answers with u's order, whatever it holds
    await redis.set(keys.idem("s", "v", "k"), first.order_id)
    settled = await scripts._settle_admit("s", lost_id, 0, TimeoutError(), idem("v", "k"))
    assert settled.outcome is Admit.LATE
    # an old-layout key of the user's own counts too
    old = await scripts.admit("s", "w", 1)
    await redis.set(keys.legacy_idem("s", "w", "a:b"), old.order_id)
    settled = await scripts._settle_admit("s", lost_id, 0, TimeoutError(), idem("w", "a:b"))
    assert (settled.outcome, settled.order_id) == (Admit.REPLAY, old.order_id)


async def _redis_ms(scripts: Scripts) -> float:
    seconds, micros = await scripts._pipe.execute("TIME")
    return int(seconds) * 1000 + int(micros) / 1000


async def test_settling_without_redis_is_unknown_within_its_bound() -> None:
    from seckill.process.procs import free_port

    clients = connect(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    try:
        scripts = Scripts(clients)
        started = time.monotonic()
        deadline = int(clients.pipe.redis_now_ms()) + 100
        settled = await scripts._settle_admit("s", "s.abcdefgh00000001", deadline, TimeoutError())
        assert (settled.outcome, settled.order_id) == (Admit.UNKNOWN, "s.abcdefgh00000001")
        assert 0.25 <= time.monotonic() - started < 1.0  # the deadline, then the timeout
    finally:
        await clients.aclose()


async def test_a_buy_never_sent_is_not_sent() -> None:
    """No connection: the script never left, and the call says so (plain 503)."""
    from seckill.process.procs import free_port

    clients = connect(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    try:
        with pytest.raises(NotSent):
            await Scripts(clients).admit("s", "u", 1)
    finally:
        await clients.aclose()


async def test_overloaded_when_backlog_at_bound(scripts: Scripts) -> None:
    await make_sale(scripts, stock=10)
    assert (await scripts.admit("s", "a", 1, max_backlog=2, now_ms=T0)).outcome is Admit.OK
    assert (await scripts.admit("s", "b", 1, max_backlog=2, now_ms=T0)).outcome is Admit.OK
    assert (await scripts.admit("s", "c", 1, max_backlog=2, now_ms=T0)).outcome is Admit.OVERLOADED
    assert (await scripts.admit("s", "c", 1, max_backlog=0, now_ms=T0)).outcome is Admit.OK


async def test_a_stale_backlog_field_of_an_older_version_is_ignored(
    scripts: Scripts, redis: Redis
) -> None:
    """The bound applies to n_queued; a "backlog" field left in the hash is neither
    read nor written."""
    await make_sale(scripts, stock=10)
    await redis.hset(keys.sale("s"), "backlog", 7)  # an old-style hash, out of step
    assert (await scripts.admit("s", "a", 1, max_backlog=2, now_ms=T0)).outcome is Admit.OK
    assert (await scripts.admit("s", "b", 1, max_backlog=2, now_ms=T0)).outcome is Admit.OK
    assert (await scripts.admit("s", "c", 1, max_backlog=2, now_ms=T0)).outcome is Admit.OVERLOADED
    sale = await redis.hgetall(keys.sale("s"))
    assert (sale["stock_left"], sale["n_queued"], sale["backlog"]) == ("8", "2", "7")
    # The OVERLOADED reply carries n_queued, not the stale field.
    reply = await redis.eval(
        lua_source("admit"),
        8,
        *(keys.sale("s"), keys.units("s"), keys.stream("s"), keys.bucket("s")),
        *("i", keys.order("s", "s.x"), keys.user_bucket("s", "c"), "i"),
        *(86_400, T0, "", 0, "", 0, 2, "s"),
        *("c", 1, "s.x", "", ""),
    )
    assert reply == [[Admit.OVERLOADED, 2]]


async def test_rate_limited_returns_refill_time(scripts: Scripts) -> None:
    await make_sale(scripts, stock=100)
    limits = Limits(rate=2.0, burst=1)
    assert (await scripts.admit("s", "a", 1, limits=limits, now_ms=T0)).outcome is Admit.OK
    r = await scripts.admit("s", "b", 1, limits=limits, now_ms=T0 + 100)
    assert (r.outcome, r.retry_after_ms) == (Admit.RATE_LIMITED, 400)
    assert (await scripts.admit("s", "b", 1, limits=limits, now_ms=T0 + 500)).outcome is Admit.OK


async def test_concurrent_crowd_sells_exactly_the_stock(scripts: Scripts, redis: Redis) -> None:
    """1,000 concurrent admits from 300 users against stock 100, one per user."""
    await make_sale(scripts, stock=100, per_user_limit=1)
    users = [f"user{i % 300}" for i in range(1000)]
    results = await asyncio.gather(*(scripts.admit("s", u, 1) for u in users))
    admitted = [u for u, r in zip(users, results, strict=True) if r.outcome is Admit.OK]
    assert len(admitted) == 100
    assert len(set(admitted)) == 100
    assert {r.outcome for r in results} <= {Admit.OK, Admit.SOLD_OUT, Admit.LIMIT_REACHED}
    assert await redis.xlen(keys.stream("s")) == 100
    assert await redis.hget(keys.sale("s"), "stock_left") == "0"
    units = await redis.hgetall(keys.units("s"))
    assert sorted(units) == sorted(admitted) and set(units.values()) == {"1"}


async def test_concurrent_burst_keeps_stock_left_and_n_queued_in_step(
    scripts: Scripts, redis: Redis
) -> None:
    """500 concurrent admits of distinct users against stock 150: the one HSET of
    stock_left and n_queued stays exact."""
    await make_sale(scripts, stock=150, per_user_limit=1)
    results = await asyncio.gather(*(scripts.admit("s", f"u{i}", 1) for i in range(500)))
    ok = [r for r in results if r.outcome is Admit.OK]
    assert len(ok) == 150
    assert {r.outcome for r in results} == {Admit.OK, Admit.SOLD_OUT}
    # every admission saw its own, exact stock_left
    assert sorted(r.stock_left for r in ok) == list(range(150))
    sale = await redis.hgetall(keys.sale("s"))
    assert (sale["stock_left"], sale["n_queued"]) == ("0", "150")
    assert "backlog" not in sale
    assert await redis.xlen(keys.stream("s")) == 150


async def test_concurrent_multi_unit_never_oversells(scripts: Scripts, redis: Redis) -> None:
    await make_sale(scripts, stock=100, per_user_limit=3)
    calls = [(f"u{i % 80}", 1 + i % 3) for i in range(600)]
    results = await asyncio.gather(*(scripts.admit("s", u, q) for u, q in calls))
    held: Counter[str] = Counter()
    for (user, qty), r in zip(calls, results, strict=True):
        if r.outcome is Admit.OK:
            held[user] += qty
    assert sum(held.values()) == 100 - int(await redis.hget(keys.sale("s"), "stock_left"))
    assert int(await redis.hget(keys.sale("s"), "stock_left")) >= 0
    assert max(held.values()) <= 3
    assert {u: str(n) for u, n in held.items()} == await redis.hgetall(keys.units("s"))


async def test_idempotency_race_makes_one_order(scripts: Scripts, redis: Redis) -> None:
    await make_sale(scripts, stock=100, per_user_limit=5)
    results = await asyncio.gather(
        *(scripts.admit("s", "u", 1, idempotency_key="same") for _ in range(50))
    )
    outcomes = Counter(r.outcome for r in results)
    assert outcomes == {Admit.OK: 1, Admit.REPLAY: 49}
    assert len({r.order_id for r in results}) == 1
    assert await redis.xlen(keys.stream("s")) == 1


async def test_noscript_reloads(scripts: Scripts, redis: Redis) -> None:
    await make_sale(scripts)
    await redis.script_flush()
    assert (await scripts.admit("s", "u", 1)).outcome is Admit.OK


# -- sale_put.lua ----------------------------------------------------------------


async def test_sale_put_defaults_and_update(scripts: Scripts) -> None:
    sale = await make_sale(scripts, stock=10)
    assert sale["name"] == "s" and sale["per_user_limit"] == "1"
    assert sale["starts_at"] == str(T0) and sale["ends_at"] == ""
    r = await scripts.sale_put("s", {"name": "Big sale"}, now_ms=T0 + 1)
    assert r.outcome is SalePut.UPDATED
    assert (r.sale["name"], r.sale["stock_total"], r.sale["starts_at"]) == (
        "Big sale",
        "10",
        str(T0),
    )


async def test_sale_put_stock_moves_by_difference(scripts: Scripts) -> None:
    await make_sale(scripts, stock=10)
    for user in "abc":
        await scripts.admit("s", user, 1, now_ms=T0)
    r = await scripts.sale_put("s", {"stock": 20})
    assert (r.sale["stock_total"], r.sale["stock_left"]) == ("20", "17")
    r = await scripts.sale_put("s", {"stock": 3})
    assert (r.sale["stock_total"], r.sale["stock_left"]) == ("3", "0")
    r = await scripts.sale_put("s", {"stock": 2})
    assert (r.outcome, r.sold) == (SalePut.STOCK_CONFLICT, 3)


async def test_sale_put_refusals(scripts: Scripts) -> None:
    assert (await scripts.sale_put("s", {"name": "x"})).outcome is SalePut.MISSING_STOCK
    r = await scripts.sale_put("s", {"stock": 1, "starts_at": T0, "ends_at": T0})
    assert r.outcome is SalePut.BAD_WINDOW
    await make_sale(scripts, starts_at=T0)
    assert (await scripts.sale_put("s", {"ends_at": T0 - 1})).outcome is SalePut.BAD_WINDOW
    r = await scripts.sale_put("s", {"ends_at": None, "starts_at": None}, now_ms=T0 + 5)
    assert (r.sale["starts_at"], r.sale["ends_at"]) == (str(T0 + 5), "")
