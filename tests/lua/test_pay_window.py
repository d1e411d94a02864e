"""The pay window's scripts (issue 15): confirm.lua gives a deadline, paid.lua
and expire.lua are compare-and-sets on the status (one winner), cancel.lua of a
confirmed order and both final statuses queue a status event for the sink."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from seckill.pipeline.consumer import GROUP
from seckill.redis import keys
from seckill.redis.scripts import Cancel, Paid, Scripts

T0 = 1_700_000_000_000
SALE = "pw"


async def confirmed(
    redis: Redis, scripts: Scripts, users: list[str], *, window: int | None = 5, stock: int = 10
) -> list[str]:
    """One confirmed order per user, confirmed at T0, in a sale with *window*."""
    fields: dict[str, object] = {"stock": stock, "per_user_limit": 2}
    if window is not None:
        fields["pay_window_s"] = window
    await scripts.sale_put(SALE, fields)
    ids = [(await scripts.admit(SALE, u, 1)).order_id for u in users]
    await redis.xgroup_create(keys.stream(SALE), GROUP, id="0")
    [[_, entries]] = await redis.xreadgroup(GROUP, "c", {keys.stream(SALE): ">"})
    for entry_id, fields_ in entries:
        assert await scripts.confirm(SALE, fields_["order_id"], GROUP, entry_id, now_ms=T0)
    return ids


async def status_events(redis: Redis) -> list[tuple[str, str]]:
    return [
        (f["order_id"], f["status"])
        for _, f in await redis.xrange(keys.stream(SALE))
        if "status" in f
    ]


async def test_confirm_gives_a_deadline_only_with_a_window(redis: Redis, scripts: Scripts) -> None:
    [a] = await confirmed(redis, scripts, ["a"])
    assert await redis.hget(keys.order(SALE, a), "pay_deadline") == str(T0 + 5000)
    assert await redis.zrange(keys.pay_deadlines(SALE), 0, -1, withscores=True) == [(a, T0 + 5000)]
    assert await redis.ttl(keys.order(SALE, a)) == -1  # not final yet: no retention TTL


async def test_no_window_no_deadline(redis: Redis, scripts: Scripts) -> None:
    [a] = await confirmed(redis, scripts, ["a"], window=None)
    assert await redis.hget(keys.order(SALE, a), "pay_deadline") is None
    assert await redis.exists(keys.pay_deadlines(SALE)) == 0
    # paid still works on a confirmed order of a sale without a window
    outcome, order = await scripts.paid(SALE, a)
    assert (outcome, order["status"]) == (Paid.PAID, "paid")


async def test_paid_then_repeat_then_no_expiry(redis: Redis, scripts: Scripts) -> None:
    [a, b] = await confirmed(redis, scripts, ["a", "b"])
    outcome, order = await scripts.paid(SALE, a, now_ms=T0 + 1000, retention=60)
    assert (outcome, order["status"], order["paid_at"]) == (Paid.PAID, "paid", str(T0 + 1000))
    assert 0 < await redis.ttl(keys.order(SALE, a)) <= 60
    outcome, order = await scripts.paid(SALE, a, now_ms=T0 + 2000)
    assert (outcome, order["status"]) == (Paid.ALREADY_PAID, "paid")
    assert await redis.zrange(keys.pay_deadlines(SALE), 0, -1) == [b]
    assert await scripts.expire(SALE, a, now_ms=T0 + 9000) is False
    sale = await redis.hgetall(keys.sale(SALE))
    assert (sale["n_paid"], sale["n_confirmed"], sale["stock_left"]) == ("1", "1", "8")
    assert await redis.hgetall(keys.units(SALE)) == {"a": "1", "b": "1"}
    assert await status_events(redis) == [(a, "paid")]


async def test_expire_returns_the_units_once(redis: Redis, scripts: Scripts) -> None:
    [a, b] = await confirmed(redis, scripts, ["a", "b"])
    assert await scripts.expire(SALE, a, now_ms=T0 + 4999) is False  # not due
    assert await scripts.expire(SALE, a, now_ms=T0 + 5000, retention=60) is True
    assert await scripts.expire(SALE, a, now_ms=T0 + 6000) is False  # once
    order = await redis.hgetall(keys.order(SALE, a))
    assert (order["status"], order["expired_at"]) == ("expired", str(T0 + 5000))
    sale = await redis.hgetall(keys.sale(SALE))
    assert (sale["n_expired"], sale["n_confirmed"], sale["stock_left"]) == ("1", "1", "9")
    assert await redis.hgetall(keys.units(SALE)) == {"b": "1"}
    assert await redis.zrange(keys.pay_deadlines(SALE), 0, -1) == [b]
    outcome, order = await scripts.paid(SALE, a, now_ms=T0 + 1000)
    assert (outcome, order["status"]) == (Paid.EXPIRED, "expired")
    assert await status_events(redis) == [(a, "expired")]
    # the buyer may buy again
    assert (await scripts.admit(SALE, "a", 2)).outcome == 0


async def test_paid_past_the_deadline_is_refused_before_the_sweep(
    redis: Redis, scripts: Scripts
) -> None:
    [a] = await confirmed(redis, scripts, ["a"])
    outcome, order = await scripts.paid(SALE, a, now_ms=T0 + 5000)
    assert (outcome, order["status"]) == (Paid.EXPIRED, "confirmed")
    assert await scripts.expire(SALE, a, now_ms=T0 + 5000) is True


async def test_paid_not_payable_and_not_found(redis: Redis, scripts: Scripts) -> None:
    await scripts.sale_put(SALE, {"stock": 3, "pay_window_s": 5})
    queued = (await scripts.admit(SALE, "q", 1)).order_id
    outcome, order = await scripts.paid(SALE, queued)
    assert (outcome, order["status"]) == (Paid.NOT_PAYABLE, "queued")
    outcome, _ = await scripts.paid(SALE, f"{SALE}.AAAAAAAAAAAAAAAA")
    assert outcome is Paid.NOT_FOUND


async def test_cancel_of_a_confirmed_order_reaches_the_sink(redis: Redis, scripts: Scripts) -> None:
    [a] = await confirmed(redis, scripts, ["a"])
    outcome, order = await scripts.cancel(SALE, a)
    assert (outcome, order["status"]) == (Cancel.CANCELLED, "cancelled")
    assert await redis.zcard(keys.pay_deadlines(SALE)) == 0
    assert await status_events(redis) == [(a, "cancelled")]


async def test_paid_racing_expire_has_one_winner(redis: Redis, scripts: Scripts) -> None:
    """Hundreds of races, each a paid and an expiry sent at once on separate
    connections: exactly one of the two wins, and the books add up."""
    n = 300
    users = [f"u{i}" for i in range(n)]
    ids = await confirmed(redis, scripts, users, stock=n)
    due = T0 + 5000

    async def race(order_id: str, k: int) -> tuple[bool, bool]:
        pay = scripts.paid(SALE, order_id, now_ms=due - 1)
        exp = scripts.expire(SALE, order_id, now_ms=due)
        calls = [pay, exp] if k % 2 else [exp, pay]
        results = await asyncio.gather(*calls)
        (outcome, _), expired = (results[0], results[1]) if k % 2 else (results[1], results[0])
        return outcome is Paid.PAID, expired

    results = await asyncio.gather(*(race(o, k) for k, o in enumerate(ids)))
    assert all(p != e for p, e in results), "exactly one winner per race"
    n_paid = sum(p for p, _ in results)
    n_expired = sum(e for _, e in results)
    assert 0 < n_paid < n and n_paid + n_expired == n
    sale = await redis.hgetall(keys.sale(SALE))
    assert (int(sale["n_paid"]), int(sale["n_expired"]), int(sale["n_confirmed"])) == (
        n_paid,
        n_expired,
        0,
    )
    assert int(sale["stock_left"]) == n_expired
    assert sum(map(int, (await redis.hgetall(keys.units(SALE))).values())) == n_paid
    assert len(await status_events(redis)) == n
    assert await redis.zcard(keys.pay_deadlines(SALE)) == 0


async def test_the_window_is_copied_to_every_bucket_and_removed(
    redis: Redis, scripts: Scripts
) -> None:
    await scripts.sale_put("pwb", {"stock": 8, "buckets": 2, "pay_window_s": 5})
    tags = (await redis.hget(keys.sale("pwb"), "tags")).split()
    assert [await redis.hget(keys.sale(t), "pay_window_s") for t in tags] == ["5", "5"]
    await scripts.sale_put("pwb", {"pay_window_s": 7})
    assert [await redis.hget(keys.sale(t), "pay_window_s") for t in tags] == ["7", "7"]
    result = await scripts.sale_put("pwb", {"pay_window_s": None})
    assert "pay_window_s" not in result.sale
    assert [await redis.hget(keys.sale(t), "pay_window_s") for t in tags] == [None, None]
