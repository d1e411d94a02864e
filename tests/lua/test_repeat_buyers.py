"""Repeat buyers under concurrency, through admit.lua directly: every user fires
several attempts at once and the stock outlasts the crowd, so only the
per-user limit stands between a user and a second (third…) unit.

The other crowd tests send distinct users first against less stock than users
(the sale sells out before a repeat arrives); these are the ones that fail
when the per-user check of admit.lua is wrong."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from redis.asyncio import Redis

from seckill.pipeline.consumer import GROUP
from seckill.redis import keys
from seckill.redis.scripts import Admit, Scripts

USERS, ATTEMPTS = 40, 6


@pytest.mark.parametrize("limit", [1, 3])
async def test_every_repeat_buyer_ends_with_exactly_the_limit(
    scripts: Scripts, redis: Redis, limit: int
) -> None:
    stock = USERS * ATTEMPTS * 2  # never the reason for a refusal
    await scripts.sale_put("rb", {"stock": stock, "per_user_limit": limit})
    # every user's attempts interleaved with everyone else's, all in flight at once
    calls = [f"u{i}" for _ in range(ATTEMPTS) for i in range(USERS)]
    results = await asyncio.gather(*(scripts.admit("rb", u, 1) for u in calls))
    ok: Counter[str] = Counter()
    refusals: Counter[Admit] = Counter()
    for user, r in zip(calls, results, strict=True):
        if r.outcome is Admit.OK:
            ok[user] += 1
        else:
            refusals[r.outcome] += 1
    assert ok == dict.fromkeys((f"u{i}" for i in range(USERS)), limit), ok
    assert refusals == {Admit.LIMIT_REACHED: USERS * (ATTEMPTS - limit)}, refusals
    assert await redis.hgetall(keys.units("rb")) == {u: str(limit) for u in ok}
    sale = await redis.hgetall(keys.sale("rb"))
    assert int(sale["stock_left"]) == stock - USERS * limit
    assert await redis.xlen(keys.stream("rb")) == USERS * limit


async def test_multi_unit_repeat_buyers_stop_at_the_limit(scripts: Scripts, redis: Redis) -> None:
    """Quantities 1 and 2 against a limit of 3: a user holds 3 at the end (1+2,
    2+1 or 1+1+1), never 4, and every refusal is limit_reached."""
    await scripts.sale_put("mu", {"stock": 10_000, "per_user_limit": 3})
    calls = [(f"u{i}", 1 + (i + k) % 2) for k in range(ATTEMPTS) for i in range(USERS)]
    results = await asyncio.gather(*(scripts.admit("mu", u, q) for u, q in calls))
    held: Counter[str] = Counter()
    for (user, qty), r in zip(calls, results, strict=True):
        if r.outcome is Admit.OK:
            held[user] += qty
        else:
            assert r.outcome is Admit.LIMIT_REACHED, r
    # 6 alternating attempts of 1 and 2: whatever the order, 3 is reached exactly
    assert set(held.values()) == {3}, held
    assert len(held) == USERS
    assert await redis.hgetall(keys.units("mu")) == {u: "3" for u in held}


async def test_confirmation_leaves_nothing_pending(scripts: Scripts, redis: Redis) -> None:
    """confirm.lua acknowledges the entry it confirms: XPENDING is empty after
    every confirmation, not only once a reclaimer has been by."""
    await scripts.sale_put("ack", {"stock": 10, "per_user_limit": 1})
    orders = [(await scripts.admit("ack", f"u{i}", 1)).order_id for i in range(3)]
    await redis.xgroup_create(keys.stream("ack"), GROUP, id="0")
    [[_, entries]] = await redis.xreadgroup(GROUP, "c", {keys.stream("ack"): ">"})
    entry_of = {fields["order_id"]: entry_id for entry_id, fields in entries}
    assert (await redis.xpending(keys.stream("ack"), GROUP))["pending"] == 3
    for n, order_id in enumerate(orders, 1):
        assert await scripts.confirm("ack", order_id, GROUP, entry_of[order_id])
        pending = await redis.xpending(keys.stream("ack"), GROUP)
        assert pending["pending"] == 3 - n, (order_id, pending)
    assert await redis.xlen(keys.stream("ack")) == 0
