"""A sale on several buckets through HTTP (issue 13): the ``buckets`` field,
a crowd sold exactly, no false sold-out, orders found, cancelled and
delivered through their bucket."""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from seckill.redis import keys
from seckill.redis.scripts import bucket_of_order, bucket_of_user
from seckill.settings import Settings
from seckill.tools.invariants import check_buckets, check_sale, wait_drained
from tests.helpers.api import ADMIN, admin_sale, create_sale
from tests.helpers.gateway import until

Client = TestClient  # type: ignore[type-arg]


def users_of_bucket(k: int, n: int, count: int, prefix: str = "u") -> list[str]:
    found: list[str] = []
    i = 0
    while len(found) < count:
        if bucket_of_user(f"{prefix}{i}", n) == k:
            found.append(f"{prefix}{i}")
        i += 1
    return found


async def buy_all(client: Client, sale: str, users: list[str]) -> list[tuple[int, dict[str, Any]]]:
    """One buy per user, 500 at a time: (status, body) each, in order."""

    async def buy(user: str) -> tuple[int, dict[str, Any]]:
        resp = await client.post(f"/api/v1/sales/{sale}/orders", headers={"X-User-Id": user})
        return resp.status, await resp.json()

    answers: list[tuple[int, dict[str, Any]]] = []
    for i in range(0, len(users), 500):
        answers += await asyncio.gather(*(buy(u) for u in users[i : i + 500]))
    return answers


@pytest.mark.parametrize("bad", [0, 65, -1, "3", 2.5, None, True])
async def test_bad_buckets_are_refused(client: Client, bad: object) -> None:
    resp = await client.put("/admin/v1/sales/b", json={"stock": 5, "buckets": bad}, headers=ADMIN)
    assert resp.status == 400, await resp.text()
    assert (await resp.json())["error"] == "invalid_request"
    assert (await client.get("/api/v1/sales/b")).status == 404


async def test_buckets_are_fixed_at_creation(client: Client) -> None:
    view = await create_sale(client, "b", stock=30, buckets=3)
    assert view["buckets"] == 3 and view["stock_left"] == 30 and view["stock_total"] == 30
    resp = await client.put("/admin/v1/sales/b", json={"buckets": 2}, headers=ADMIN)
    assert resp.status == 409 and (await resp.json())["error"] == "buckets_immutable"
    resp = await client.put("/admin/v1/sales/b", json={"buckets": 3, "stock": 40}, headers=ADMIN)
    assert resp.status == 200 and (await resp.json())["stock_left"] == 40
    plain = await create_sale(client, "p", stock=3)
    assert plain["buckets"] == 1
    resp = await client.put("/admin/v1/sales/p", json={"buckets": 2}, headers=ADMIN)
    assert resp.status == 409 and (await resp.json())["error"] == "buckets_immutable"
    listed = (await (await client.get("/admin/v1/sales", headers=ADMIN)).json())["sales"]
    assert [(s["sale_id"], s["buckets"], s["stock_left"]) for s in listed] == [
        ("b", 3, 40),
        ("p", 1, 3),
    ]


async def test_crowd_of_5000_for_1000_units_in_3_buckets(client: Client, redis: Redis) -> None:
    await create_sale(client, "hot", stock=1000, buckets=3, per_user_limit=1)
    users = [f"buyer{i}" for i in range(5000)]
    answers = await buy_all(client, "hot", users)
    statuses = Counter(status for status, _ in answers)
    assert statuses == {202: 1000, 409: 4000}
    assert {b["error"] for s, b in answers if s == 409} == {"sold_out"}
    admitted = [b for s, b in answers if s == 202]
    assert {b["sale_id"] for b in admitted} == {"hot"}
    assert {bucket_of_order(b["order_id"]) for b in admitted} == {0, 1, 2}
    view = await (await client.get("/api/v1/sales/hot")).json()
    assert (view["stock_left"], view["status"]) == (0, "sold_out")
    assert await wait_drained(redis, "hot", 30)  # the checks read a sale at rest
    checks = await check_sale(redis, "hot")
    assert all(c.ok for c in checks), [c.line() for c in checks]
    assert {c.name for c in checks} >= {"buckets_conserve", "per_user_limit", "never_oversold"}
    # the bucket tags are in the sale index (their streams are read), the
    # sale list shows the sale once
    assert await redis.sismember(keys.SALES_INDEX, "hot/0")


async def test_skewed_crowd_gets_every_unit(client: Client, redis: Redis) -> None:
    """Every buyer in bucket 0: it refills from the pool, then drains buckets 1
    and 2; nobody is told sold_out while a unit is left anywhere."""
    await create_sale(client, "skew", stock=500, buckets=3, per_user_limit=1)
    users = users_of_bucket(0, 3, 700)
    answers = await buy_all(client, "skew", users)
    assert Counter(s for s, _ in answers) == {202: 500, 409: 200}
    report = await check_buckets(redis, "skew")
    assert report.ok and report.available == 0, report.problems
    # one at a time: the first 500 - 0 ... every answer before the last unit is a 202
    await create_sale(client, "one", stock=20, buckets=4, per_user_limit=1)
    order = [s for s, _ in [*(await buy_all(client, "one", users_of_bucket(3, 4, 1, "a")))]]
    for user in users_of_bucket(3, 4, 24, "b"):
        status, _ = (await buy_all(client, "one", [user]))[0]
        order.append(status)
    assert order == [202] * 20 + [409] * 5


async def test_order_lookup_cancel_and_restock(client: Client, redis: Redis) -> None:
    await create_sale(client, "c", stock=4, buckets=2, per_user_limit=1)
    answers = await buy_all(client, "c", ["ann", "bob", "cid", "dan", "eve"])
    assert Counter(s for s, _ in answers) == {202: 4, 409: 1}
    (ann_status, ann), *_ = answers
    assert ann_status == 202
    resp = await client.get(f"/api/v1/orders/{ann['order_id']}", headers={"X-User-Id": "ann"})
    assert resp.status == 200 and (await resp.json())["sale_id"] == "c"
    resp = await client.get(f"/api/v1/orders/{ann['order_id']}", headers={"X-User-Id": "bob"})
    assert resp.status == 404
    # cancel: the unit goes back to ann's bucket, and ann may buy again
    resp = await client.post(f"/admin/v1/orders/{ann['order_id']}/cancel", headers=ADMIN)
    assert resp.status == 200 and (await resp.json())["status"] == "cancelled"
    tag = f"c/{bucket_of_user('ann', 2)}"
    assert await redis.hget(keys.sale(tag), "stock_left") == "1"
    assert (await admin_sale(client, "c"))["stock_left"] == 1
    # restock goes to the pool; eve (refused before) now gets a unit
    resp = await client.put("/admin/v1/sales/c", json={"stock": 5}, headers=ADMIN)
    assert resp.status == 200 and (await resp.json())["stock_left"] == 2
    assert await redis.hget(keys.sale("c"), "pool") == "1"
    answers = await buy_all(client, "c", ["eve", "ann", "fay"])
    assert Counter(s for s, _ in answers) == {202: 2, 409: 1}
    sale = await admin_sale(client, "c")
    assert sale["stock_left"] == 0 and sale["orders"]["cancelled"] == 1
    assert await wait_drained(redis, "c", 30)
    checks = await check_sale(redis, "c")
    assert all(c.ok for c in checks), [c.line() for c in checks]


async def test_bucket_orders_are_delivered_under_their_sale(
    client: Client, settings: Settings, redis: Redis
) -> None:
    await create_sale(client, "d", stock=60, buckets=3, per_user_limit=1)
    answers = await buy_all(client, "d", [f"d{i}" for i in range(80)])
    admitted = [b for s, b in answers if s == 202]
    assert len(admitted) == 60

    async def delivered() -> bool:
        return (await admin_sale(client, "d"))["orders"]["confirmed"] == 60

    await until(delivered, 20, "every order confirmed")
    with sqlite3.connect(settings.data_dir / "orders.db") as db:
        rows = db.execute("SELECT order_id, sale_id FROM orders").fetchall()
    assert sorted(rows) == sorted((b["order_id"], "d") for b in admitted)
    checks = await check_sale(redis, "d", sink_url=settings.sink_url, require_drained=True)
    assert all(c.ok for c in checks), [c.line() for c in checks]


async def test_idempotency_keys_replay_in_the_users_bucket(client: Client) -> None:
    await create_sale(client, "i", stock=2, buckets=2, per_user_limit=1)

    async def buy(user: str, key: str) -> tuple[int, dict[str, Any]]:
        resp = await client.post(
            "/api/v1/sales/i/orders", headers={"X-User-Id": user, "Idempotency-Key": key}
        )
        return resp.status, await resp.json()

    first = await buy("kim", "k1")
    assert first[0] == 202
    assert await buy("kim", "k1") == first
    assert (await buy("lee", "k1"))[0] == 202
    refused = await buy("max", "k1")
    assert refused[0] == 409 and refused[1]["error"] == "sold_out"
    # sold out (and flagged so in this process): a replay still gets its order
    assert await buy("kim", "k1") == first


async def test_the_sale_rate_splits_over_the_buckets(client: Client) -> None:
    await create_sale(client, "r", stock=100, buckets=3, per_user_limit=1)
    resp = await client.put("/admin/v1/limits", json={"rate": 0.001, "burst": 6}, headers=ADMIN)
    assert resp.status == 200
    # burst 6 over 3 buckets: 2 tokens each
    answers = await buy_all(client, "r", users_of_bucket(1, 3, 3))
    assert [s for s, _ in answers] == [202, 202, 429]


async def test_metrics_and_undetermined_list_see_the_sale_summed(
    client: Client, redis: Redis
) -> None:
    await create_sale(client, "m", stock=30, buckets=3, per_user_limit=1)
    answers = await buy_all(client, "m", [f"m{i}" for i in range(10)])
    assert Counter(s for s, _ in answers) == {202: 10}
    text = await (await client.get("/metrics")).text()
    assert 'seckill_sale_stock_left{sale="m"} 20.0' in text, text
    assert 'seckill_sale_stock_total{sale="m"} 30.0' in text
    assert 'sale="m/' not in text
    # an order parked as undetermined in a bucket is listed under its sale
    order_id = answers[0][1]["order_id"]
    tag = f"m/{bucket_of_order(order_id)}"
    await redis.hset(keys.order(tag, order_id), "status", "undetermined")
    await redis.zadd(keys.undetermined(tag), {order_id: 1})
    for query in ("status=undetermined&sale_id=m", "status=undetermined"):
        listed = await (await client.get(f"/admin/v1/orders?{query}", headers=ADMIN)).json()
        assert [o["order_id"] for o in listed["orders"]] == [order_id]
