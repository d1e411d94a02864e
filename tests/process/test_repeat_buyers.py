"""Repeat buyers across two gateway processes (``seckill serve --processes 2``):
every user fires several buys at once, each on its own connection (the kernel
spreads them over both processes), and the stock outlasts the crowd, so the
per-user limit alone decides: each user ends with exactly ``per_user_limit``
units and every other answer is 409 ``limit_reached``."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import aiohttp
import pytest
from redis.asyncio import Redis

from seckill.redis import keys
from tests.helpers.api import ADMIN
from tests.helpers.gateway import Gateway

USERS, ATTEMPTS, LIMIT = 40, 5, 2


@pytest.fixture
def gateway(redis_url: str, redis: Redis) -> Iterator[Gateway]:
    with Gateway("--processes", "2", "--redis-url", redis_url) as gw:
        gw.wait_ready()
        yield gw
        assert gw.stop() == 0


@pytest.mark.multiprocess
async def test_repeat_buyers_across_two_processes(gateway: Gateway, redis: Redis) -> None:
    stock = USERS * ATTEMPTS * 2
    # one connection per request: no keep-alive, so both processes take buys
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as s:
        resp = await s.put(
            f"{gateway.url}/admin/v1/sales/rb2",
            json={"stock": stock, "per_user_limit": LIMIT},
            headers=ADMIN,
        )
        assert resp.status == 201, await resp.text()

        async def buy(user: str) -> tuple[str, int, str]:
            async with s.post(
                f"{gateway.url}/api/v1/sales/rb2/orders", headers={"X-User-Id": user}
            ) as r:
                body = await r.json()
                return user, r.status, body.get("error", "")

        calls = [f"u{i}" for _ in range(ATTEMPTS) for i in range(USERS)]
        answers = await asyncio.gather(*(buy(u) for u in calls))
    admitted = Counter(user for user, status, _ in answers if status == 202)
    refusals = Counter((status, error) for _, status, error in answers if status != 202)
    assert admitted == dict.fromkeys((f"u{i}" for i in range(USERS)), LIMIT), admitted
    assert refusals == {(409, "limit_reached"): USERS * (ATTEMPTS - LIMIT)}, refusals
    assert await redis.hgetall(keys.units("rb2")) == {u: str(LIMIT) for u in admitted}
    assert int(await redis.hget(keys.sale("rb2"), "stock_left")) == stock - USERS * LIMIT
