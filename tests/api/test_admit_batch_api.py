"""Batched admission over HTTP (issue 14): a crowd's buys reach Redis in
batches (fewer admit.lua calls than buys) and the answers are exact."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from seckill.redis import keys
from tests.helpers.api import admin_sale, create_sale, crowd


async def admit_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


async def test_a_crowd_over_http_sells_exactly_the_stock_in_batches(
    client: TestClient,  # type: ignore[type-arg]
    redis: Redis,
) -> None:
    await create_sale(client, "s1", stock=100, per_user_limit=1)
    before = await admit_calls(redis)
    accepted = await crowd(client, "s1", [f"u{i}" for i in range(400)])
    calls = await admit_calls(redis) - before
    assert len(accepted) == 100
    assert len({a["order_id"] for a in accepted}) == 100
    assert calls < 400, calls  # some buys shared a call (the local sold-out flag saves more)
    sale = await admin_sale(client, "s1")
    assert sale["stock_left"] == 0


async def test_idempotency_key_replays_over_http_in_one_batch(
    client: TestClient,  # type: ignore[type-arg]
    redis: Redis,
) -> None:
    await create_sale(client, "s1", stock=50, per_user_limit=2)

    async def buy(user: str) -> tuple[int, dict[str, Any]]:
        resp = await client.post(
            "/api/v1/sales/s1/orders", headers={"X-User-Id": user, "Idempotency-Key": "once"}
        )
        return resp.status, await resp.json()

    answers = await asyncio.gather(*(buy(f"u{i % 5}") for i in range(200)))
    assert Counter(status for status, _ in answers) == {202: 200}
    orders: dict[str, set[str]] = {}
    for i, (_, body) in enumerate(answers):
        orders.setdefault(f"u{i % 5}", set()).add(body["order_id"])
    assert all(len(ids) == 1 for ids in orders.values())  # one order per user
    sale = await admin_sale(client, "s1")
    assert sale["stock_left"] == 45


async def test_repeat_buyers_over_http_never_pass_the_limit(
    client: TestClient,  # type: ignore[type-arg]
    redis: Redis,
) -> None:
    """100 users buying 3 times each, all at once, limit 2, stock 150: the
    stock sells exactly and nobody holds more than 2."""
    await create_sale(client, "s1", stock=150, per_user_limit=2)

    async def buy(user: str) -> tuple[int, str]:
        resp = await client.post("/api/v1/sales/s1/orders", headers={"X-User-Id": user})
        return resp.status, user

    answers = await asyncio.gather(*(buy(f"u{i % 100}") for i in range(300)))
    assert {status for status, _ in answers} <= {202, 409}
    held = Counter(user for status, user in answers if status == 202)
    assert sum(held.values()) == 150
    assert max(held.values()) <= 2
    units = await redis.hgetall(keys.units("s1"))
    assert {u: int(n) for u, n in units.items()} == dict(held)
    assert (await admin_sale(client, "s1"))["stock_left"] == 0
