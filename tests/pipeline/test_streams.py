"""Reading many sales' streams: one multi-stream read (single node) or one
blocking read per stream within a bounded number of turns (Redis Cluster's
way, forced here on a single node), each order delivered exactly once."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import pytest
from redis.asyncio import Redis

from seckill.pipeline.consumer import GROUP, IDLE_TIMEOUT_MS, ROTATE_BLOCK_MS, Pipeline
from seckill.pipeline.sinks import sink_from_url
from seckill.redis import keys
from seckill.redis.client import RedisClients
from seckill.redis.scripts import Scripts
from seckill.settings import Settings
from tests.helpers.gateway import until
from tests.helpers.webhook import Webhook

SALES, PER_SALE = 50, 6


async def _noop(sale_id: str) -> None:
    return None


async def admit_everywhere(redis: Redis, scripts: Scripts, prefix: str) -> set[str]:
    """SALES sales of PER_SALE orders each, admitted before any reader runs."""
    order_ids: set[str] = set()
    for n in range(SALES):
        sale = f"{prefix}{n}"
        await scripts.sale_put(sale, {"stock": PER_SALE + 1})
        await redis.sadd(keys.SALES_INDEX, sale)
        for u in range(PER_SALE):
            order_ids.add((await scripts.admit(sale, f"u{u}", 1)).order_id)
    return order_ids


async def blocked_reads(redis: Redis) -> int:
    """Connections of this server blocked in XREADGROUP right now."""
    clients: list[dict[str, Any]] = await redis.client_list()
    return sum(1 for c in clients if c.get("cmd") == "xreadgroup" and "b" in c.get("flags", ""))


@pytest.mark.parametrize("per_stream", [False, True], ids=["multi-stream", "per-stream"])
async def test_many_sales_are_all_delivered_exactly_once(
    clients: RedisClients,
    scripts: Scripts,
    settings: Settings,
    webhook: Webhook,
    per_stream: bool,
) -> None:
    redis = clients.redis
    order_ids = await admit_everywhere(redis, scripts, "m")
    turns = 4
    options = dataclasses.replace(
        settings.pipeline_options(), per_stream=per_stream, blocking_reads=turns
    )
    sink = sink_from_url(webhook.url, timeout=5)
    pipeline = Pipeline(clients, scripts, sink, options, "reader", _noop)
    started = time.monotonic()
    await pipeline.start()
    most_blocked = 0

    async def all_delivered() -> bool:
        nonlocal most_blocked
        most_blocked = max(most_blocked, await blocked_reads(redis))
        return webhook.delivered == order_ids

    try:
        assert pipeline.per_stream is per_stream
        await until(all_delivered, 30, "every order of every sale delivered")
        took = time.monotonic() - started
        # new orders on an idle sale while the readers take turns: read too
        late = {(await scripts.admit("m7", "late", 1)).order_id}
        await until(lambda: late <= webhook.delivered, 10, "a late order delivered")
        for _ in range(10):  # idle: the readers keep turning within their bound
            most_blocked = max(most_blocked, await blocked_reads(redis))
            await asyncio.sleep(ROTATE_BLOCK_MS / 1000)
    finally:
        await pipeline.stop()
    print(
        f"{'per-stream' if per_stream else 'multi-stream'}: {len(order_ids)} orders of"
        f" {SALES} sales delivered in {took:.2f}s"
    )
    assert set(webhook.by_key.values()) == {1}  # exactly once each
    assert webhook.raw == len(order_ids) + 1
    # blocking reads (connections held by them) stay within the turns
    assert 1 <= most_blocked <= (turns if per_stream else 1)
    for n in range(SALES):
        assert (await redis.xpending(keys.stream(f"m{n}"), GROUP))["pending"] == 0


@pytest.mark.parametrize("per_stream", [False, True], ids=["multi-stream", "per-stream"])
async def test_a_restart_re_delivers_its_own_pending_entries_at_once(
    clients: RedisClients,
    scripts: Scripts,
    settings: Settings,
    webhook: Webhook,
    per_stream: bool,
) -> None:
    """Entries a consumer read before it died stay pending on its name; a
    pipeline started again under that name delivers them at once, in either
    read mode — well before the reclaimer could take them as idle."""
    redis = clients.redis
    sales = ["p0", "p1", "p2"]
    order_ids: set[str] = set()
    for sale in sales:
        await scripts.sale_put(sale, {"stock": 10})
        await redis.sadd(keys.SALES_INDEX, sale)
        await redis.xgroup_create(keys.stream(sale), GROUP, id="0", mkstream=True)
        for u in range(4):
            order_ids.add((await scripts.admit(sale, f"u{u}", 1)).order_id)
        # read under the name "reader", never handled: the reader died holding them
        [[_, entries]] = await redis.xreadgroup(GROUP, "reader", {keys.stream(sale): ">"})
        assert len(entries) == 4
    options = dataclasses.replace(settings.pipeline_options(), per_stream=per_stream)
    pipeline = Pipeline(
        clients, scripts, sink_from_url(webhook.url, timeout=5), options, "reader", _noop
    )
    await pipeline.start()
    try:
        assert pipeline.per_stream is per_stream
        within = IDLE_TIMEOUT_MS / 1000 / 3  # the reclaimer cannot have taken them by then
        await until(lambda: webhook.delivered == order_ids, within, "the pending entries re-read")
    finally:
        await pipeline.stop()
    assert set(webhook.by_key.values()) == {1}
    for sale in sales:
        assert (await redis.xpending(keys.stream(sale), GROUP))["pending"] == 0
