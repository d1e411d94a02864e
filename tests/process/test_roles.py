"""``seckill serve --role gateway|worker`` as separate servers on one Redis
(as on many hosts): gateways admit, workers deliver, and a worker killed with
-9 has its pending orders taken over by another within 30 s."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import redis as redis_sync
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from seckill.pipeline.consumer import GROUP
from seckill.redis import keys
from tests.helpers.api import ADMIN
from tests.helpers.gateway import Gateway, until
from tests.helpers.webhook import Webhook

pytestmark = pytest.mark.multiprocess

#: the reclaimer's promise: a dead host's pending orders are taken over within this
TAKEOVER_WITHIN = 30.0


@pytest.fixture
async def shared_redis(redis_url: str) -> AsyncIterator[Redis]:
    """The session's Redis, flushed: what every server of a test shares."""
    client = redis_sync.Redis.from_url(redis_url)
    client.flushall()
    client.close()
    made = Redis.from_url(redis_url, decode_responses=True)
    yield made
    await made.aclose()


@pytest.fixture
async def webhook() -> AsyncIterator[Webhook]:
    hook = await Webhook().start()
    yield hook
    await hook.stop()


async def started(server: Gateway) -> Gateway:
    """Wait for readiness off the event loop (the test's webhook runs on it)."""
    await asyncio.to_thread(server.wait_ready)
    return server


async def call(method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as s, s.request(method, url, **kwargs) as resp:
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, await resp.text()


async def buy_all(url: str, sale: str, users: list[str]) -> set[str]:
    answers = await asyncio.gather(
        *(
            call("POST", f"{url}/api/v1/sales/{sale}/orders", headers={"X-User-Id": u})
            for u in users
        )
    )
    assert {status for status, _ in answers} == {202}, answers
    return {body["order_id"] for _, body in answers}


async def test_gateways_admit_and_nothing_is_delivered_until_a_worker_starts(
    shared_redis: Redis, redis_url: str, webhook: Webhook
) -> None:
    redis = shared_redis
    common = ["--redis-url", redis_url, "--order-sink", webhook.url]
    with Gateway("--role", "gateway", "--processes", "2", *common, name="gw") as gw:
        await started(gw)
        status, _ = await call(
            "PUT", f"{gw.url}/admin/v1/sales/rp", json={"stock": 30}, headers=ADMIN
        )
        assert status == 201
        wanted = await buy_all(gw.url, "rp", [f"u{i}" for i in range(30)])
        # both processes of the gateway count in the shield's divisor
        await until(lambda: _zcard_is(redis, 2), 5, "two gateways in seckill:gateways")
        # admitted, and waiting in the stream: no reader, not even a group
        assert await redis.xlen(keys.stream("rp")) == 30
        assert await redis.xinfo_groups(keys.stream("rp")) == []
        assert webhook.raw == 0

        with Gateway("--role", "worker", *common, name="worker") as worker:
            await started(worker)
            await until(lambda: webhook.delivered == wanted, 20, "every order delivered")
            for path in ("/healthz", "/readyz", "/metrics"):
                assert (await call("GET", f"{worker.url}{path}"))[0] == 200, path
            for method, path in [
                ("POST", "/api/v1/sales/rp/orders"),
                ("GET", "/admin/v1/sales/rp"),
                ("GET", "/dashboard"),
            ]:
                status, body = await call(
                    method, f"{worker.url}{path}", headers={**ADMIN, "X-User-Id": "x"}
                )
                assert (status, body["error"]) == (404, "not_found"), (method, path)
            assert await _zcard_is(redis, 2)  # the worker does not count
            assert "generated admin token" not in worker.output()
            assert worker.stop() == 0
        assert set(webhook.by_key.values()) == {1}  # each exactly once
        assert (await redis.xpending(keys.stream("rp"), GROUP))["pending"] == 0
        assert gw.stop() == 0


async def _zcard_is(redis: Redis, n: int) -> bool:
    return int(await redis.zcard(keys.GATEWAYS)) == n


async def test_a_killed_workers_pending_orders_are_taken_over_within_30s(
    shared_redis: Redis, redis_url: str, webhook: Webhook
) -> None:
    redis = shared_redis
    # worker A's deliveries never arrive (its sink holds them), so whatever it
    # read stays pending on it until it dies; worker B delivers to the real sink
    black_hole = await Webhook().start()
    black_hole.gate = asyncio.Event()
    try:
        base = ["--redis-url", redis_url, "--delivery-timeout", "60"]
        with (
            Gateway("--role", "gateway", *base, name="gw") as gw,
            Gateway("--role", "worker", *base, "--order-sink", black_hole.url, name="a") as a,
        ):
            await started(gw)
            status, _ = await call(
                "PUT", f"{gw.url}/admin/v1/sales/rk", json={"stock": 40}, headers=ADMIN
            )
            assert status == 201
            await started(a)
            wanted = await buy_all(gw.url, "rk", [f"u{i}" for i in range(40)])

            async def all_pending_on_a() -> bool:
                try:
                    consumers = await redis.xinfo_consumers(keys.stream("rk"), GROUP)
                except ResponseError:  # NOGROUP: A has not seen the sale yet
                    return False
                return [(c["name"].rsplit(":", 2)[1], c["pending"]) for c in consumers] == [
                    (str(a.port), 40)
                ]

            await until(all_pending_on_a, 15, "A to hold every order")
            # B starts once A holds them all: it can only get them by taking over
            with Gateway("--role", "worker", *base, "--order-sink", webhook.url, name="b") as b:
                await started(b)
                assert webhook.raw == 0
                a.kill()  # kill -9 of its whole process group: the host is gone
                killed = time.monotonic()
                await until(
                    lambda: webhook.delivered == wanted,
                    TAKEOVER_WITHIN,
                    "B to take over and deliver A's orders",
                )
                took = time.monotonic() - killed
                print(
                    f"takeover: {len(wanted)} orders delivered by B {took:.1f}s after kill -9 of A"
                )

                async def nothing_pending() -> bool:
                    return (await redis.xpending(keys.stream("rk"), GROUP))["pending"] == 0

                await until(nothing_pending, 10, "every entry acknowledged")
                assert set(webhook.by_key.values()) == {1}
                assert "took over" in b.output()
                assert b.stop() == 0
            assert gw.stop() == 0
    finally:
        await black_hole.stop()
