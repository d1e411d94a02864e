"""kill -9 during a drain: nothing lost, every order in the sink once."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis as redis_sync

from seckill.pipeline.consumer import GROUP, IDLE_TIMEOUT_MS
from seckill.process.procs import children_of, cmdline
from seckill.redis import keys
from tests.helpers.api import ADMIN
from tests.helpers.gateway import Gateway, until
from tests.helpers.webhook import Webhook

pytestmark = [pytest.mark.fault, pytest.mark.multiprocess]

STOCK = 200
#: a restart re-reads its own pending entries at once: the drain after it must
#: end well before the reclaimer could take them over (an entry idle for
#: IDLE_TIMEOUT_MS), so that a broken re-read cannot pass on the reclaimer
REDELIVERY_BOUND = IDLE_TIMEOUT_MS / 1000 / 2
#: what the reclaimer logs when it takes entries over (seckill/pipeline/consumer.py)
RECLAIMED = "took over"


@pytest.fixture
async def webhook() -> AsyncIterator[Webhook]:
    hook = await Webhook().start()
    hook.delay = 0.03  # a slow backend: 4 workers x 2 processes drain ~250 orders/s
    yield hook
    await hook.stop()


async def admin_sale(url: str, sale: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s:
        resp = await s.get(f"{url}/admin/v1/sales/{sale}", headers=ADMIN)
        return await resp.json()  # type: ignore[no-any-return]


async def sell_out(url: str, sale: str) -> set[str]:
    async with aiohttp.ClientSession() as s:
        resp = await s.put(f"{url}/admin/v1/sales/{sale}", json={"stock": STOCK}, headers=ADMIN)
        assert resp.status == 201
        ids = set()
        for i in range(STOCK):
            resp = await s.post(f"{url}/api/v1/sales/{sale}/orders", headers={"X-User-Id": f"u{i}"})
            assert resp.status == 202
            ids.add((await resp.json())["order_id"])
    return ids


@pytest.mark.parametrize("victim", ["whole-gateway", "one-child"])
async def test_kill_9_mid_drain_loses_nothing(
    tmp_path: Path, redis_binary: str | None, webhook: Webhook, victim: str
) -> None:
    args = ["--data-dir", str(tmp_path), "--processes", "2", "--order-workers", "4"]
    args += ["--order-sink", webhook.url]
    if redis_binary:
        args += ["--redis-server", redis_binary]
    with Gateway(*args) as gw:
        gw.wait_ready()
        admitted = await sell_out(gw.url, "k9")
        await until(lambda: len(webhook.delivered) >= 20, 20, "the drain to start")
        if victim == "whole-gateway":
            os.killpg(gw.proc.pid, signal.SIGKILL)  # supervisor and both children
            gw.proc.wait(10)
        else:
            child = children_of(gw.proc.pid)
            workers = [p for p in child if "multiprocessing" in cmdline(p)]
            os.kill(workers[0], signal.SIGKILL)
        delivered_at_kill = len(webhook.delivered)
        assert delivered_at_kill < STOCK, "the drain finished before the kill; slow the webhook"
        if victim == "whole-gateway":
            # restart on the same data dir and port: the same consumer names
            with Gateway(*args, port=gw.port) as again:
                again.wait_ready()
                started = time.monotonic()
                await until(
                    lambda: _drained(again.url),
                    REDELIVERY_BOUND,
                    "the drain after restart (its own pending entries, re-read at once)",
                )
                took = time.monotonic() - started
                _assert_nothing_pending(again.redis_url)
                assert RECLAIMED not in again.output(), again.tail(20)
                assert again.stop() == 0
        else:
            # the supervisor restarts the child, which re-delivers its own pending entries
            started = time.monotonic()
            await until(
                lambda: _drained(gw.url),
                REDELIVERY_BOUND,
                "the drain after the child restart (its own pending entries, re-read at once)",
            )
            took = time.monotonic() - started
            _assert_nothing_pending(gw.redis_url)
            assert RECLAIMED not in gw.output(), gw.tail(20)
            assert gw.stop() == 0

    # every admitted order reached the sink; a receiver that dedups by
    # Idempotency-Key (as the contract asks of a webhook) holds each once. An
    # order whose 2xx was lost with the killed process is delivered again.
    assert webhook.delivered == admitted
    again = sum(n - 1 for n in webhook.by_key.values())
    assert again <= 8 * 2  # at most the deliveries in flight at the kill
    print(
        f"\n{victim}: {webhook.raw} raw deliveries, {again} repeated, {len(admitted)} orders;"
        f" drained {took:.1f}s after the restart"
    )


def _assert_nothing_pending(redis_url: str) -> None:
    """Every entry of the sale acknowledged: nothing left for a reclaimer."""
    with redis_sync.Redis.from_url(redis_url, decode_responses=True) as r:
        pending = r.xpending(keys.stream("k9"), GROUP)
        assert pending["pending"] == 0, pending


async def _drained(url: str) -> bool:
    sale = await admin_sale(url, "k9")
    return bool(sale["orders"]["confirmed"] == STOCK and sale["backlog"] == 0)
