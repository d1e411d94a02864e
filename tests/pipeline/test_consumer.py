"""The order pipeline end to end: stream → queue → workers → real sinks."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from seckill.http.state import RUNTIME
from seckill.pipeline.consumer import GROUP, Pipeline, reclaim_lock
from seckill.pipeline.sinks import sink_from_url
from seckill.redis import keys
from seckill.redis.client import RedisClients
from seckill.redis.scripts import Scripts
from seckill.settings import Settings
from tests.helpers.api import ADMIN, admin_sale, create_sale, crowd
from tests.helpers.gateway import until
from tests.helpers.webhook import Webhook
from tests.pipeline.conftest import Client, MakeClient


async def confirmed(client: Client, sale: str, n: int) -> bool:
    return (await admin_sale(client, sale))["orders"]["confirmed"] == n


async def test_burst_is_delivered_to_sqlite_once_each(
    make_client: MakeClient, settings: Settings, redis: Redis
) -> None:
    client = await make_client()
    await create_sale(client, "p1", stock=150)
    admitted = await crowd(client, "p1", [f"u{i}" for i in range(400)])
    assert len(admitted) == 150
    await until(lambda: confirmed(client, "p1", 150), 20, "every order confirmed")
    sale = await admin_sale(client, "p1")
    assert sale["orders"] == {
        "queued": 0,
        "confirmed": 150,
        "failed": 0,
        "cancelled": 0,
        "undetermined": 0,
        "paid": 0,
        "expired": 0,
    }
    assert (sale["backlog"], sale["stock_left"]) == (0, 0)
    # delivered entries are acknowledged and deleted from the stream; final
    # orders get their retention
    assert await redis.xlen(keys.stream("p1")) == 0
    assert (await redis.xpending(keys.stream("p1"), GROUP))["pending"] == 0
    ttls = {await redis.ttl(keys.order("p1", o["order_id"])) for o in admitted}
    assert all(0 < t <= settings.order_retention for t in ttls), ttls
    with sqlite3.connect(settings.data_dir / "orders.db") as db:
        rows = db.execute("SELECT order_id, user_id, quantity FROM orders").fetchall()
    assert sorted(r[0] for r in rows) == sorted(o["order_id"] for o in admitted)
    # the customer sees the final status
    for o in admitted[:5]:
        user = next(r[1] for r in rows if r[0] == o["order_id"])
        resp = await client.get(f"/api/v1/orders/{o['order_id']}", headers={"X-User-Id": user})
        assert (await resp.json())["status"] == "confirmed"


async def test_worker_pool_bounds_concurrency_towards_the_sink(
    make_client: MakeClient, webhook: Webhook
) -> None:
    webhook.delay = 0.02
    client = await make_client(order_sink=webhook.url, order_workers=4)
    await create_sale(client, "p2", stock=60)
    assert len(await crowd(client, "p2", [f"u{i}" for i in range(60)])) == 60
    await until(lambda: confirmed(client, "p2", 60), 20, "every order confirmed")
    assert webhook.max_in_flight == 4  # all workers used, never more
    assert len(webhook.delivered) == 60
    assert webhook.raw == 60  # one delivery each: nothing retried or stolen


async def test_sink_down_for_a_while_then_back(make_client: MakeClient, webhook: Webhook) -> None:
    webhook.fail = True
    client = await make_client(order_sink=webhook.url, delivery_retries=20)
    await create_sale(client, "p3", stock=20)
    admitted = await crowd(client, "p3", [f"u{i}" for i in range(20)])
    await until(lambda: webhook.raw >= 40, 20, "failed deliveries being retried")
    webhook.fail = False
    await until(lambda: confirmed(client, "p3", 20), 30, "every order confirmed")
    assert webhook.delivered == {o["order_id"] for o in admitted}
    assert (await admin_sale(client, "p3"))["orders"]["failed"] == 0


async def test_sink_refusing_fails_orders_and_returns_stock(
    make_client: MakeClient, webhook: Webhook
) -> None:
    webhook.fail, webhook.fail_status = True, 400  # a definite refusal
    client = await make_client(order_sink=webhook.url, delivery_retries=5)
    await create_sale(client, "p4", stock=3)
    admitted = await crowd(client, "p4", ["a", "b", "c", "d"])
    assert len(admitted) == 3

    async def all_failed() -> bool:
        return (await admin_sale(client, "p4"))["orders"]["failed"] == 3

    await until(all_failed, 20, "orders failed")
    assert webhook.raw == 3  # released at the first refusal: no retry
    sale = await admin_sale(client, "p4")
    assert (sale["stock_left"], sale["status"], sale["backlog"]) == (3, "active", 0)
    # the sold-out flag was cleared everywhere: the sale is buyable again, by the same users too
    webhook.fail = False
    again = await crowd(client, "p4", ["a", "d"])
    assert len(again) == 2
    await until(lambda: confirmed(client, "p4", 2), 20, "new orders confirmed")


async def test_cancel_returns_stock_and_lets_the_user_buy_again(
    make_client: MakeClient, webhook: Webhook
) -> None:
    webhook.gate = asyncio.Event()  # hold deliveries: the order stays queued
    client = await make_client(order_sink=webhook.url)
    await create_sale(client, "p5", stock=1)
    [order] = await crowd(client, "p5", ["alice"])
    assert await crowd(client, "p5", ["bob"]) == []  # sold out
    resp = await client.post(f"/admin/v1/orders/{order['order_id']}/cancel", headers=ADMIN)
    assert resp.status == 200
    assert (await resp.json())["status"] == "cancelled"
    sale = await admin_sale(client, "p5")
    assert (sale["stock_left"], sale["orders"]["cancelled"], sale["backlog"]) == (1, 1, 0)
    resp = await client.post(f"/admin/v1/orders/{order['order_id']}/cancel", headers=ADMIN)
    assert (resp.status, (await resp.json())["error"]) == (409, "order_not_cancellable")
    [again] = await crowd(client, "p5", ["alice"])  # same user buys again
    webhook.gate.set()
    await until(lambda: confirmed(client, "p5", 1), 20, "the new order confirmed")
    # the cancelled order was skipped: only the new one reached the sink
    assert webhook.delivered == {again["order_id"]}


@pytest.mark.parametrize(
    ("order_id", "status", "code"),
    [("p6.AAAAAAAAAAAAAAAA", 404, "order_not_found"), ("nodot", 400, "invalid_request")],
)
async def test_cancel_bad_ids(client: Client, order_id: str, status: int, code: str) -> None:
    resp = await client.post(f"/admin/v1/orders/{order_id}/cancel", headers=ADMIN)
    assert (resp.status, (await resp.json())["error"]) == (status, code)
    resp = await client.post(f"/admin/v1/orders/{order_id}/cancel")
    assert resp.status == 401


async def test_backlog_bound_answers_overloaded_then_resumes(
    make_client: MakeClient, webhook: Webhook
) -> None:
    webhook.gate = asyncio.Event()
    client = await make_client(order_sink=webhook.url, max_backlog=5)
    await create_sale(client, "p7", stock=100)
    assert len(await crowd(client, "p7", [f"u{i}" for i in range(5)])) == 5
    resp = await client.post("/api/v1/sales/p7/orders", headers={"X-User-Id": "late"})
    assert resp.status == 503
    assert (await resp.json())["error"] == "overloaded"
    assert int(resp.headers["Retry-After"]) >= 1
    webhook.gate.set()  # the backend catches up
    await until(lambda: confirmed(client, "p7", 5), 20, "the backlog drained")
    assert len(await crowd(client, "p7", ["late"])) == 1


async def test_replayed_confirm_and_release_change_nothing(redis: Redis, scripts: Scripts) -> None:
    await scripts.sale_put("p8", {"stock": 5})
    a = await scripts.admit("p8", "a", 1)
    b = await scripts.admit("p8", "b", 1)
    await redis.xgroup_create(keys.stream("p8"), GROUP, id="0")
    entries = await redis.xreadgroup(GROUP, "c", {keys.stream("p8"): ">"})
    (ea, _), (eb, _) = entries[0][1]
    assert await scripts.confirm("p8", a.order_id, GROUP, ea) is True
    assert await scripts.confirm("p8", a.order_id, GROUP, ea) is False
    assert await scripts.release("p8", a.order_id, GROUP, ea) is False  # confirmed stays
    assert await scripts.release("p8", b.order_id, GROUP, eb) is True
    assert await scripts.release("p8", b.order_id, GROUP, eb) is False
    assert await scripts.confirm("p8", b.order_id, GROUP, eb) is False  # failed stays
    sale = await redis.hgetall(keys.sale("p8"))
    assert (sale["stock_left"], sale["n_confirmed"], sale["n_failed"], sale["n_queued"]) == (
        "4",
        "1",
        "1",
        "0",
    )
    assert "backlog" not in sale  # the backlog is n_queued, not a field of its own
    assert await redis.hgetall(keys.units("p8")) == {"a": "1"}
    assert (await redis.xpending(keys.stream("p8"), GROUP))["pending"] == 0


async def test_reclaimer_takes_over_a_dead_consumers_entries(
    clients: RedisClients, scripts: Scripts, settings: Settings, tmp_path: Path
) -> None:
    redis = clients.redis
    await scripts.sale_put("p9", {"stock": 10})
    await redis.sadd(keys.SALES_INDEX, "p9")
    orders = [await scripts.admit("p9", f"u{i}", 1) for i in range(6)]
    await redis.xgroup_create(keys.stream("p9"), GROUP, id="0")
    # a process read them and died before delivering
    await redis.xreadgroup(GROUP, "dead", {keys.stream("p9"): ">"})
    sink = sink_from_url(f"sqlite:///{tmp_path}/o.db")
    pipeline = Pipeline(clients, scripts, sink, settings.pipeline_options(), "alive", _noop)
    await pipeline.start()
    try:
        await until(lambda: bool(pipeline.sales), 5, "the sale discovered")
        assert await pipeline.reclaim(idle_ms=60_000) == 0  # not idle long enough
        # only one process at a time reclaims a stream: its lock is held elsewhere
        async with redis.lock(reclaim_lock("p9"), timeout=5):
            assert await pipeline.reclaim(idle_ms=0) == 0
        assert await pipeline.reclaim(idle_ms=0) == 6
        await until(lambda: _all_status(redis, "p9", orders, "confirmed"), 10, "confirmed")
    finally:
        await pipeline.stop()
    with sqlite3.connect(tmp_path / "o.db") as db:
        assert db.execute("SELECT count(*) FROM orders").fetchone() == (6,)


async def _noop(sale_id: str) -> None:
    return None


async def _all_status(redis: Redis, sale: str, orders: list[Any], status: str) -> bool:
    for o in orders:
        if await redis.hget(keys.order(sale, o.order_id), "status") != status:
            return False
    return True


async def test_readyz_reports_the_workers(client: Client) -> None:
    resp = await client.get("/readyz")
    assert resp.status == 200
    pipeline = client.app[RUNTIME].pipeline
    assert pipeline is not None and pipeline.running
