"""The pay window on a Redis Cluster (issue 15): a sale with buckets on
several primaries, paid and expired orders, units back to each bucket, the
sink's statuses and reconcile — every script on one slot (a bucket's)."""

from __future__ import annotations

import sqlite3
from collections import Counter

import pytest
from aiohttp.test_utils import TestClient

from seckill.settings import Settings
from tests.helpers.api import ADMIN, admin_sale, create_sale, crowd
from tests.helpers.gateway import until

pytestmark = pytest.mark.cluster


async def test_a_bucketed_sale_pays_and_expires_on_a_cluster(
    cluster_client: TestClient, cluster_settings: Settings
) -> None:
    sale = "pwc"
    await create_sale(cluster_client, sale, stock=30, buckets=3, pay_window_s=1)
    orders = await crowd(cluster_client, sale, [f"u{i}" for i in range(40)])
    assert len(orders) == 30

    async def confirmed() -> bool:
        view = await admin_sale(cluster_client, sale)
        return view["orders"]["queued"] == 0

    await until(confirmed, 20, "every order delivered")
    paid = 0
    for o in orders[:10]:
        resp = await cluster_client.post(f"/admin/v1/orders/{o['order_id']}/paid", headers=ADMIN)
        assert resp.status in (200, 409)  # 409 order_expired: the 1 s window is short
        paid += resp.status == 200

    async def settled() -> bool:
        view = await admin_sale(cluster_client, sale)
        return view["orders"]["paid"] + view["orders"]["expired"] == 30

    await until(settled, 20, "every order paid or expired")
    view = await admin_sale(cluster_client, sale)
    assert view["orders"]["paid"] == paid
    assert view["stock_left"] == 30 - paid
    path = cluster_settings.data_dir / "orders.db"

    async def sink_told() -> bool:
        db = sqlite3.connect(path)
        try:
            rows = db.execute("SELECT status FROM orders").fetchall()
        finally:
            db.close()
        return Counter(r[0] for r in rows) == Counter({"paid": paid, "expired": 30 - paid})

    await until(sink_told, 20, "the sink to hear every status")
    resp = await cluster_client.post("/admin/v1/reconcile", json={"sale_id": sale}, headers=ADMIN)
    body = await resp.json()
    assert body["ok"], body
    # the returned units sell again, across the buckets
    again = await crowd(cluster_client, sale, [f"n{i}" for i in range(40)])
    assert len(again) == 30 - paid
