"""/metrics and /admin/v1/stats: outcomes counted once each, across processes too."""

from __future__ import annotations

import asyncio
import re
from collections import Counter

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from seckill import metrics
from seckill.http.routes.customer import _OUTCOME_OF
from seckill.tools.invariants import wait_drained
from tests.helpers.api import ADMIN, create_sale
from tests.helpers.gateway import Gateway, until

FAMILY_RE = re.compile(r'^seckill_buy_requests_total\{outcome="(\w+)",sale="([^"]*)"\} ([\d.e+]+)$')


def buy_counts(text: str) -> Counter[tuple[str, str]]:
    counts: Counter[tuple[str, str]] = Counter()
    for line in text.splitlines():
        m = FAMILY_RE.match(line)
        if m:
            counts[(m.group(1), m.group(2))] += int(float(m.group(3)))
    return counts


def value(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


async def test_outcomes_and_gauges(client: TestClient, redis: Redis) -> None:
    before = buy_counts(await (await client.get("/metrics")).text())
    hist_before = (
        value(await (await client.get("/metrics")).text(), "seckill_buy_duration_seconds_count")
        or 0
    )
    await create_sale(client, "m1", stock=2)
    for user in ("a", "b", "c", "a"):
        await client.post("/api/v1/sales/m1/orders", headers={"X-User-Id": user})
    await client.post("/api/v1/sales/m1/orders")  # no identity
    await client.post("/api/v1/sales/nope/orders", headers={"X-User-Id": "a"})
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    delta = buy_counts(text) - before
    admitted = sum(n for (o, _), n in delta.items() if o == "admitted")
    assert admitted == 2
    assert sum(n for (o, _), n in delta.items() if o == "sold_out") == 2
    assert delta[("unauthenticated", "")] == 1
    assert delta[("not_found", "")] == 1
    assert (value(text, "seckill_buy_duration_seconds_count") or 0) - hist_before == 6
    assert 'seckill_sale_stock_left{sale="m1"} 0.0' in text
    assert 'seckill_sale_stock_total{sale="m1"} 2.0' in text
    assert "seckill_order_workers " in text or "seckill_order_workers{" in text
    assert 'seckill_limit_burst{bucket="sale"} 1.0' in text
    assert {o for o, _ in buy_counts(text)} <= set(metrics.OUTCOMES)
    # one family per name, and no user id anywhere in the labels
    assert "user" not in "".join(re.findall(r"\{[^}]*\}", text)).replace('bucket="user"', "")


async def test_stats_are_the_same_counts_as_json(client: TestClient, redis: Redis) -> None:
    """GET /admin/v1/stats: the dashboard's counters, exactly what /metrics counts."""
    assert (await client.get("/admin/v1/stats")).status == 401
    before = await (await client.get("/admin/v1/stats", headers=ADMIN)).json()
    await create_sale(client, "st", stock=2)
    for user in ("a", "b", "c"):
        await client.post("/api/v1/sales/st/orders", headers={"X-User-Id": user})
    await client.post("/api/v1/sales/st/orders", headers={"X-User-Id": "bad id!"})
    await client.post("/api/v1/sales/nope/orders", headers={"X-User-Id": "a"})
    await create_sale(client, "st2", stock=10)
    # the sale's bucket holds 1 token, this process's shield 2 (twice its share)
    await client.put("/admin/v1/limits", json={"rate": 0.001, "burst": 1}, headers=ADMIN)
    statuses = [
        (await client.post("/api/v1/sales/st2/orders", headers={"X-User-Id": u})).status
        for u in ("d", "e", "f")
    ]
    assert statuses == [202, 429, 429]  # admitted; refused by Redis; refused locally
    resp = await client.get("/admin/v1/stats", headers=ADMIN)
    assert resp.status == 200
    stats = await resp.json()
    assert set(stats) == {
        "buys", "buys_by_sale", "buy_latency", "deliveries", "rate_limited",
        "redis_errors", "workers", "queue_depth",
    }  # fmt: skip
    assert list(stats["buys"]) == list(metrics.OUTCOMES)
    grew = {o: stats["buys"][o] - before["buys"][o] for o in metrics.OUTCOMES}
    assert {o: n for o, n in grew.items() if n} == {
        "admitted": 3, "sold_out": 1, "unauthenticated": 1, "not_found": 1, "rate_limited": 2,
    }  # fmt: skip
    for outcome in metrics.OUTCOMES:  # by sale ('' until this process knows the sale) adds up
        by_sale = sum(per.get(outcome, 0) for per in stats["buys_by_sale"].values())
        assert by_sale == stats["buys"][outcome]
    assert stats["rate_limited"]["local"] - before["rate_limited"]["local"] == 1
    assert stats["rate_limited"]["cluster"] - before["rate_limited"]["cluster"] == 1
    latency = stats["buy_latency"]
    assert latency["bounds"] == list(metrics.BUY_BUCKETS)
    assert len(latency["counts"]) == len(latency["bounds"]) + 1
    assert latency["counts"] == sorted(latency["counts"])  # cumulative
    assert latency["counts"][-1] - before["buy_latency"]["counts"][-1] == 8
    assert stats["workers"]["running"] == 8
    # the same totals as the Prometheus text
    text = await (await client.get("/metrics")).text()
    counts = buy_counts(text)
    for outcome in metrics.OUTCOMES:
        assert sum(n for (o, _), n in counts.items() if o == outcome) == stats["buys"][outcome]


async def test_deliveries_and_live_gauges(client: TestClient, redis: Redis) -> None:
    """Delivery counts and latencies are batched, the live gauges sampled: a
    scrape still shows every delivered order, and idle workers as idle."""
    before = await (await client.get("/metrics")).text()
    confirmed_before = value(before, 'seckill_order_deliveries_total{result="confirmed"}') or 0
    timed_before = value(before, "seckill_order_delivery_duration_seconds_count") or 0
    await create_sale(client, "d1", stock=300)
    answers = await asyncio.gather(
        *(
            client.post("/api/v1/sales/d1/orders", headers={"X-User-Id": f"u{i}"})
            for i in range(300)
        )
    )
    assert [r.status for r in answers].count(202) == 300
    assert await wait_drained(redis, "d1", 30)
    text = await (await client.get("/metrics")).text()
    assert (
        value(text, 'seckill_order_deliveries_total{result="confirmed"}') == confirmed_before + 300
    )
    assert value(text, "seckill_order_delivery_duration_seconds_count") == timed_before + 300
    assert value(text, "seckill_order_workers_busy") == 0
    assert value(text, "seckill_order_queue_depth") == 0


@pytest.mark.multiprocess
async def test_two_processes_are_summed_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with Gateway("--processes", "2", "--data-dir", str(tmp_path)) as gw:
        gw.wait_ready()
        async with aiohttp.ClientSession() as s:
            r = await s.put(f"{gw.url}/admin/v1/sales/mp", json={"stock": 50}, headers=ADMIN)
            assert r.status == 201

            async def buy(i: int) -> int:
                async with s.post(
                    f"{gw.url}/api/v1/sales/mp/orders", headers={"X-User-Id": f"u{i}"}
                ) as resp:
                    return resp.status

            statuses = Counter(await asyncio.gather(*(buy(i) for i in range(300))))
            assert statuses[202] == 50

            # counts are current within a second, from every process
            async def all_counted() -> bool:
                text = await (await s.get(f"{gw.url}/metrics")).text()
                return sum(buy_counts(text).values()) == 300

            await until(all_counted, 5, "every buy counted")

            async def both_pipelines() -> bool:  # /readyz answered for one process
                text = await (await s.get(f"{gw.url}/metrics")).text()
                return value(text, "seckill_order_workers") == 16  # 8 per process

            await until(both_pipelines, 10, "both processes' workers")
            # each process answers /metrics with everyone's counts: ask several times
            for _ in range(4):
                text = await (await s.get(f"{gw.url}/metrics")).text()
                counts = buy_counts(text)
                assert sum(counts.values()) == 300
                assert counts[("admitted", "mp")] + counts[("admitted", "")] == 50
                assert value(text, "seckill_buy_duration_seconds_count") == 300
                stats = await (await s.get(f"{gw.url}/admin/v1/stats", headers=ADMIN)).json()
                assert sum(stats["buys"].values()) == 300
                assert stats["buys"]["admitted"] == 50
                assert stats["buy_latency"]["counts"][-1] == 300
                assert stats["workers"]["running"] == 16
        assert gw.stop() == 0


def test_every_refusal_maps_to_a_contract_outcome() -> None:
    assert set(_OUTCOME_OF.values()) <= set(metrics.OUTCOMES)
