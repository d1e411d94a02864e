"""The API in cluster mode: sales on every primary sell over HTTP through one
gateway, and the admin routes (sales, limits, orders, the sale list) work."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient

from seckill.redis import keys
from seckill.redis.client import RedisClients
from tests.helpers.api import ADMIN, create_sale
from tests.helpers.cluster import LocalCluster

pytestmark = pytest.mark.cluster


async def buy(client: TestClient, sale_id: str, user: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    resp = await client.post(f"/api/v1/sales/{sale_id}/orders", headers={"X-User-Id": user})
    return resp.status, await resp.json()


async def test_sales_on_every_primary_sell_over_http(
    cluster_client: TestClient,
    cluster_clients: RedisClients,
    local_cluster: LocalCluster,
    sales: list[str],
) -> None:
    for index, sale_id in enumerate(sales):
        assert local_cluster.node_of(keys.sale(sale_id)) is local_cluster.nodes[index]
        await create_sale(cluster_client, sale_id, stock=3, per_user_limit=1)
    for sale_id in sales:
        answers = [await buy(cluster_client, sale_id, f"u{i}") for i in range(4)]
        assert [status for status, _ in answers] == [202, 202, 202, 409]
        assert answers[3][1]["error"] == "sold_out"
    # each sale's keys sit on its own primary, and nowhere else
    for index, sale_id in enumerate(sales):
        for node in local_cluster.nodes:
            with node.client() as c:
                held = c.hget(keys.sale(sale_id), "stock_left") if node.index == index else None
                assert held == ("0" if node.index == index else None)
    # the auto-pipeline holds one connection per primary
    addresses = {n.address for n in local_cluster.nodes}
    assert set(cluster_clients.pipe._nodes) == addresses


async def test_a_crowd_over_three_primaries_buys_exactly_the_stock(
    cluster_client: TestClient, cluster_clients: RedisClients, sales: list[str]
) -> None:
    for sale_id in sales:
        await create_sale(cluster_client, sale_id, stock=40, per_user_limit=2)
    buys = [(sale_id, f"user{i % 90}") for sale_id in sales for i in range(180)]
    answers = await asyncio.gather(*(buy(cluster_client, s, u) for s, u in buys))
    assert {status for status, _ in answers} <= {202, 409}
    for sale_id in sales:
        orders = [
            body
            for (s, _), (status, body) in zip(buys, answers, strict=True)
            if s == sale_id and status == 202
        ]
        assert len(orders) == 40
        held = await cluster_clients.redis.hgetall(keys.units(sale_id))
        assert sum(int(v) for v in held.values()) == 40
        assert max(int(v) for v in held.values()) <= 2
        resp = await cluster_client.get(f"/api/v1/sales/{sale_id}")
        assert (await resp.json())["stock_left"] == 0


async def test_the_admin_api_in_cluster_mode(
    cluster_client: TestClient, cluster_clients: RedisClients, sales: list[str]
) -> None:
    for sale_id in sales:
        await create_sale(cluster_client, sale_id, stock=5)
    # the sale list reads every primary
    resp = await cluster_client.get("/admin/v1/sales", headers=ADMIN)
    assert resp.status == 200
    listed = await resp.json()
    assert sorted(v["sale_id"] for v in listed["sales"]) == sorted(sales)
    # limits: stored in one hash, read back, applied
    resp = await cluster_client.put("/admin/v1/limits", json={"per_user_rate": 1.0}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    resp = await cluster_client.get("/admin/v1/limits", headers=ADMIN)
    assert (await resp.json())["per_user_rate"] == 1.0
    # an order read back by its id, and cancelled
    status, order = await buy(cluster_client, sales[1], "alice")
    assert status == 202, order
    resp = await cluster_client.get(
        f"/api/v1/orders/{order['order_id']}", headers={"X-User-Id": "alice"}
    )
    assert resp.status == 200, await resp.text()
    resp = await cluster_client.post(f"/admin/v1/orders/{order['order_id']}/cancel", headers=ADMIN)
    assert resp.status in (200, 409), await resp.text()
    # the metrics walk every sale too
    resp = await cluster_client.get("/metrics")
    assert resp.status == 200
