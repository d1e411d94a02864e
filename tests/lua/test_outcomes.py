"""The scripts that end an order: confirm, release, park, defer, settle, cancel
and ack — their counters, the undetermined set, XDEL of the entry and the
retention TTL of the final order hash."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from seckill.pipeline.consumer import GROUP
from seckill.redis import keys
from seckill.redis.scripts import Cancel, Scripts, Settle

T0 = 1_700_000_000_000
SALE = "out"
DAY = 86_400


async def admitted(redis: Redis, scripts: Scripts, users: list[str]) -> list[tuple[str, str]]:
    """(order id, stream entry id) of one new order per user, read by a consumer."""
    await scripts.sale_put(SALE, {"stock": 5, "per_user_limit": 2})
    ids = [(await scripts.admit(SALE, u, 1)).order_id for u in users]
    await redis.xgroup_create(keys.stream(SALE), GROUP, id="0")
    [[_, entries]] = await redis.xreadgroup(GROUP, "c", {keys.stream(SALE): ">"})
    entry = {fields["order_id"]: entry_id for entry_id, fields in entries}
    return [(i, entry[i]) for i in ids]


async def counters(redis: Redis) -> dict[str, str]:
    sale = await redis.hgetall(keys.sale(SALE))
    # the counters that are not 0, and stock_left
    return {k: v for k, v in sale.items() if (k.startswith("n_") and v != "0") or k == "stock_left"}


async def test_park_holds_the_stock_and_lists_the_order(redis: Redis, scripts: Scripts) -> None:
    [(a, ea), (_, eb)] = await admitted(redis, scripts, ["a", "b"])
    assert await scripts.park(SALE, a, GROUP, ea, now_ms=T0) is True
    assert await scripts.park(SALE, a, GROUP, ea, now_ms=T0) is False  # replay: nothing twice
    order = await redis.hgetall(keys.order(SALE, a))
    assert (order["status"], order["undetermined_at"]) == ("undetermined", str(T0))
    assert await counters(redis) == {
        "stock_left": "3",  # still held
        "n_queued": "1",
        "n_undetermined": "1",
    }
    assert await redis.hgetall(keys.units(SALE)) == {"a": "1", "b": "1"}
    assert await redis.zrange(keys.undetermined(SALE), 0, -1, withscores=True) == [(a, T0)]
    # acknowledged and deleted from the stream; the other entry is untouched
    assert (await redis.xpending(keys.stream(SALE), GROUP))["pending"] == 1
    assert [e[0] for e in await redis.xrange(keys.stream(SALE))] == [eb]
    # confirm and release leave an undetermined order alone (only an operator settles it)
    assert await scripts.confirm(SALE, a, GROUP, ea) is False
    assert await scripts.release(SALE, a, GROUP, ea) is False
    assert (await redis.hget(keys.order(SALE, a), "status")) == "undetermined"
    assert await redis.ttl(keys.order(SALE, a)) == -1  # not final: kept


async def test_settle_confirm_and_release(redis: Redis, scripts: Scripts) -> None:
    [(a, ea), (b, eb), (c, _)] = await admitted(redis, scripts, ["a", "b", "c"])
    await scripts.park(SALE, a, GROUP, ea)
    await scripts.park(SALE, b, GROUP, eb)
    outcome, order = await scripts.settle(SALE, a, "confirm", retention=DAY, now_ms=T0)
    assert outcome is Settle.SETTLED
    assert (order["status"], order["confirmed_at"], order["settled_at"]) == (
        "confirmed",
        str(T0),
        str(T0),
    )
    outcome, order = await scripts.settle(SALE, b, "release", retention=DAY)
    assert (outcome, order["status"]) == (Settle.SETTLED, "failed")
    assert await counters(redis) == {
        "stock_left": "3",  # b's unit came back
        "n_queued": "1",
        "n_confirmed": "1",
        "n_failed": "1",
    }
    assert await redis.hgetall(keys.units(SALE)) == {"a": "1", "c": "1"}
    assert await redis.zcard(keys.undetermined(SALE)) == 0
    for order_id in (a, b):
        assert 0 < await redis.ttl(keys.order(SALE, order_id)) <= DAY
    # wrong state, unknown order, bad outcome
    outcome, order = await scripts.settle(SALE, a, "release")
    assert (outcome, order["status"]) == (Settle.NOT_UNDETERMINED, "confirmed")
    outcome, order = await scripts.settle(SALE, c, "confirm")  # still queued
    assert (outcome, order["status"]) == (Settle.NOT_UNDETERMINED, "queued")
    assert await scripts.settle(SALE, f"{SALE}.AAAAAAAAAAAAAAAA", "confirm") == (
        Settle.NOT_FOUND,
        {},
    )
    with pytest.raises(ValueError, match="confirm"):
        await scripts.settle(SALE, c, "maybe")
    assert (await counters(redis))["stock_left"] == "3"


async def test_final_orders_expire_after_the_retention_and_entries_are_deleted(
    redis: Redis, scripts: Scripts
) -> None:
    [(a, ea), (b, eb), (c, ec), (d, _)] = await admitted(redis, scripts, ["a", "b", "c", "d"])
    assert await scripts.confirm(SALE, a, GROUP, ea, retention=DAY)
    assert await scripts.release(SALE, b, GROUP, eb, retention=DAY)
    outcome, _ = await scripts.cancel(SALE, c, retention=DAY)
    assert outcome is Cancel.CANCELLED
    await scripts.ack(SALE, GROUP, ec)  # the worker finds it cancelled
    for order_id in (a, b, c):
        assert 0 < await redis.ttl(keys.order(SALE, order_id)) <= DAY
    assert await redis.ttl(keys.order(SALE, d)) == -1  # queued: never expires
    # only the queued order's entry is left, still pending
    assert await redis.xlen(keys.stream(SALE)) == 1
    assert (await redis.xpending(keys.stream(SALE), GROUP))["pending"] == 1
    # retention 0 keeps the hash (and a replay changes nothing)
    await redis.persist(keys.order(SALE, a))
    assert await scripts.confirm(SALE, a, GROUP, ea, retention=DAY) is False
    assert await redis.ttl(keys.order(SALE, a)) == -1


async def test_undetermined_order_is_not_cancellable(redis: Redis, scripts: Scripts) -> None:
    [(a, ea)] = await admitted(redis, scripts, ["a"])
    await scripts.park(SALE, a, GROUP, ea)
    outcome, order = await scripts.cancel(SALE, a)
    assert (outcome, order["status"]) == (Cancel.NOT_CANCELLABLE, "undetermined")
    assert (await counters(redis))["stock_left"] == "4"


async def test_defer_notes_the_doubt_only_on_a_queued_order(redis: Redis, scripts: Scripts) -> None:
    [(a, ea), (b, _)] = await admitted(redis, scripts, ["a", "b"])
    assert await scripts.defer(SALE, a, now_ms=T0, retry_at_ms=T0 + 1000) == (T0, 1)
    # the doubt began at the first round; later rounds keep that time
    assert await scripts.defer(SALE, a, now_ms=T0 + 5000, retry_at_ms=T0 + 7000) == (T0, 2)
    order = await redis.hgetall(keys.order(SALE, a))
    assert (order["unknown_since"], order["retry_at"], order["rounds"]) == (
        str(T0),
        str(T0 + 7000),
        "2",
    )
    await scripts.confirm(SALE, a, GROUP, ea)
    assert await scripts.defer(SALE, a, now_ms=T0, retry_at_ms=T0) is None
    # an order hash that is gone is not brought back as a partial hash
    await redis.delete(keys.order(SALE, b))
    assert await scripts.defer(SALE, b, now_ms=T0, retry_at_ms=T0) is None
    assert await redis.exists(keys.order(SALE, b)) == 0


async def test_begin_counts_due_tries_only(redis: Redis, scripts: Scripts) -> None:
    [(a, ea)] = await admitted(redis, scripts, ["a"])
    first = await scripts.begin(SALE, a, now_ms=T0)
    assert (first.status, first.unknown_since, first.retry_at) == ("queued", None, None)
    assert (first.attempts_before, first.due, first.rounds) == (0, True, 0)
    assert (await scripts.begin(SALE, a, now_ms=T0)).attempts_before == 1
    await scripts.defer(SALE, a, now_ms=T0, retry_at_ms=T0 + 1000)
    backing_off = await scripts.begin(SALE, a, now_ms=T0 + 999)
    assert (backing_off.due, backing_off.unknown_since, backing_off.retry_at) == (
        False,
        T0,
        T0 + 1000,
    )
    assert backing_off.rounds == 1  # what the next backoff is reckoned from
    assert (await scripts.begin(SALE, a, now_ms=T0 + 1000)).attempts_before == 2  # not counted
    assert await redis.hget(keys.order(SALE, a), "attempts") == "3"
    await scripts.confirm(SALE, a, GROUP, ea)
    done = await scripts.begin(SALE, a, now_ms=T0 + 5000)
    assert (done.status, done.due) == ("confirmed", False)
    gone = await scripts.begin(SALE, f"{SALE}.AAAAAAAAAAAAAAAA", now_ms=T0)
    assert (gone.status, gone.due) == ("", False)
    assert await redis.exists(keys.order(SALE, f"{SALE}.AAAAAAAAAAAAAAAA")) == 0
