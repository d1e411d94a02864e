"""Repeat buyers over HTTP: every user fires several buys at once and the stock
outlasts the crowd, so each user ends with exactly ``per_user_limit`` units and
every other answer is 409 ``limit_reached`` (docs/API.md §4, check 13)."""

from __future__ import annotations

import asyncio
from collections import Counter

from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from seckill.redis import keys
from tests.helpers.api import admin_sale, create_sale

USERS, ATTEMPTS, LIMIT = 30, 5, 2


async def test_repeat_buyers_end_with_exactly_the_limit(client: TestClient, redis: Redis) -> None:
    stock = USERS * ATTEMPTS * 2
    await create_sale(client, "rb", stock=stock, per_user_limit=LIMIT)

    async def buy(user: str) -> tuple[str, int, str]:
        resp = await client.post("/api/v1/sales/rb/orders", headers={"X-User-Id": user})
        body = await resp.json()
        return user, resp.status, body.get("error", body.get("order_id", ""))

    calls = [f"u{i}" for _ in range(ATTEMPTS) for i in range(USERS)]
    answers = await asyncio.gather(*(buy(u) for u in calls))
    admitted = Counter(user for user, status, _ in answers if status == 202)
    refusals = Counter((status, what) for _, status, what in answers if status != 202)
    assert admitted == dict.fromkeys((f"u{i}" for i in range(USERS)), LIMIT), admitted
    assert refusals == {(409, "limit_reached"): USERS * (ATTEMPTS - LIMIT)}, refusals
    assert await redis.hgetall(keys.units("rb")) == {u: str(LIMIT) for u in admitted}
    assert (await admin_sale(client, "rb"))["stock_left"] == stock - USERS * LIMIT
