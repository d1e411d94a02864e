"""The gauges the alert rules stand on (deploy/prometheus/alerts.yml):
``seckill_redis_up``, ``seckill_sale_reconciliation_drift`` and the
rate-limit layers counted from 0; and a scrape that still answers when Redis
does not."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from seckill.process.embedded import EmbeddedRedis
from seckill.redis import keys
from tests.helpers.api import ADMIN, create_sale
from tests.helpers.gateway import Gateway


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the one sample of *name* with *labels* (None: no such sample)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.compile(rf"^{re.escape(name)}(\{{{re.escape(want)}\}})? (\S+)$", re.MULTILINE)
    found = [m for m in pattern.finditer(text) if bool(m.group(1)) == bool(want)]
    assert len(found) <= 1, found
    return float(found[0].group(2)) if found else None


async def test_redis_up_drift_and_rate_limit_layers(client: TestClient, redis: Redis) -> None:
    await create_sale(client, "d1", stock=3)
    for user in ("a", "b"):
        resp = await client.post("/api/v1/sales/d1/orders", headers={"X-User-Id": user})
        assert resp.status == 202
    text = await (await client.get("/metrics")).text()
    assert sample(text, "seckill_redis_up") == 1
    assert sample(text, "seckill_sale_stock_left", sale="d1") == 1
    assert sample(text, "seckill_sale_reconciliation_drift", sale="d1") == 0
    for layer in ("local", "cluster"):  # present before any 429, so rate() sees the first
        assert sample(text, "seckill_rate_limited_total", layer=layer) is not None

    # books that disagree: a unit held that the counters never sold
    await redis.hincrby(keys.units("d1"), "ghost", 1)
    text = await (await client.get("/metrics")).text()
    assert sample(text, "seckill_sale_reconciliation_drift", sale="d1") == -1
    await redis.hincrby(keys.sale("d1"), "stock_left", -3)  # and 3 units sold by nobody
    text = await (await client.get("/metrics")).text()
    assert sample(text, "seckill_sale_reconciliation_drift", sale="d1") == 2


@pytest.mark.fault
async def test_a_scrape_answers_while_redis_does_not(
    tmp_path: Path, redis_binary: str | None
) -> None:
    """Redis stopped (SIGSTOP): /metrics is 200 within the Redis timeout, with
    seckill_redis_up 0, the process counters, and no stale sale gauges."""
    server = EmbeddedRedis(tmp_path / "redis", redis_binary)
    url = server.start()
    try:
        with Gateway("--redis-url", url, "--redis-timeout", "0.5") as gw:
            gw.wait_ready()
            assert gw.admin("PUT", "/admin/v1/sales/s1", {"stock": 5})[0] == 201
            assert server.process is not None
            async with aiohttp.ClientSession() as s:
                text = await (await s.get(f"{gw.url}/metrics")).text()
                assert sample(text, "seckill_redis_up") == 1
                assert sample(text, "seckill_sale_stock_left", sale="s1") == 5
                os.kill(server.process.pid, signal.SIGSTOP)
                try:
                    resp = await s.get(f"{gw.url}/metrics", timeout=aiohttp.ClientTimeout(total=3))
                    assert resp.status == 200
                    text = await resp.text()
                finally:
                    os.kill(server.process.pid, signal.SIGCONT)
                assert sample(text, "seckill_redis_up") == 0
                assert sample(text, "seckill_sale_stock_left", sale="s1") is None
                assert sample(text, "seckill_redis_errors_total") is not None
                text = await (await s.get(f"{gw.url}/metrics", headers=ADMIN)).text()
                assert sample(text, "seckill_redis_up") == 1
            assert gw.stop() == 0
    finally:
        server.stop()
