"""The sinks hear every final status (issue 15): the webhook's status events
with their own Idempotency-Key and its {"paid": true} answer; the SQLite
status column (idempotent updates, the migration of a table made before);
expiry in a sale with buckets (each bucket its own deadline set)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from seckill.pipeline import reconcile
from seckill.pipeline.sinks import Order
from seckill.pipeline.sinks.sqlite import SQLiteSink
from seckill.redis import keys
from tests.helpers.api import ADMIN, admin_sale, create_sale, crowd
from tests.helpers.webhook import Webhook
from tests.pipeline.conftest import MakeClient

WAIT = 30.0


async def until(what: str, check: Callable[[], Awaitable[bool]], within: float = WAIT) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.05)


async def test_webhook_hears_statuses_with_their_own_key(
    make_client: MakeClient, webhook: Webhook
) -> None:
    client = await make_client(order_sink=webhook.url)
    await create_sale(client, "wh", stock=3, pay_window_s=1)
    orders = await crowd(client, "wh", ["a", "b", "c"])
    ids = [o["order_id"] for o in orders]

    async def delivered() -> bool:
        return webhook.delivered == set(ids) and (
            (await admin_sale(client, "wh"))["orders"]["queued"] == 0
        )

    await until("3 orders delivered", delivered)
    resp = await client.post(f"/admin/v1/orders/{ids[0]}/paid", headers=ADMIN)
    assert resp.status == 200
    resp = await client.post(f"/admin/v1/orders/{ids[1]}/cancel", headers=ADMIN)
    assert resp.status == 200

    async def told() -> bool:
        return set(webhook.status_keys) == {
            f"{ids[0]}:paid",
            f"{ids[1]}:cancelled",
            f"{ids[2]}:expired",
        }

    await until("paid, cancelled and expired status events", told)
    body = webhook.statuses[f"{ids[2]}:expired"]
    assert (body["event"], body["sale_id"], body["user_id"]) == ("status", "wh", "c")
    assert body["at"].endswith("Z")
    assert webhook.by_key[ids[0]] == 1  # the order itself: once, under its own key


async def test_webhook_answer_paid_settles_the_order(
    make_client: MakeClient, webhook: Webhook, redis: Redis
) -> None:
    client = await make_client(order_sink=webhook.url)
    await create_sale(client, "wp", stock=2, pay_window_s=1)
    webhook.pay_all = True
    [a, b] = await crowd(client, "wp", ["a", "b"])

    async def paid() -> bool:
        return (await admin_sale(client, "wp"))["orders"]["paid"] == 2

    await until("both orders paid by the webhook's answer", paid)
    # paid: never expire, even well past the window
    assert await redis.zcard(keys.pay_deadlines("wp")) == 0
    assert set(webhook.status_keys) >= {f"{a['order_id']}:paid", f"{b['order_id']}:paid"}


def _old_table(path: Path) -> None:
    db = sqlite3.connect(path)
    with db:
        db.execute(
            "CREATE TABLE orders (order_id TEXT PRIMARY KEY, sale_id TEXT NOT NULL,"
            " user_id TEXT NOT NULL, quantity INTEGER NOT NULL, created_at TEXT NOT NULL,"
            " confirmed_at TEXT NOT NULL)"
        )
        db.execute("INSERT INTO orders VALUES ('s.AAAAAAAAAAAAAAAA', 's', 'u', 1, 'x', 'y')")
    db.close()


async def test_sqlite_migrates_an_old_table_and_sets_statuses_idempotently(
    tmp_path: Path,
) -> None:
    path = tmp_path / "orders.db"
    _old_table(path)
    sink = SQLiteSink(path)
    await sink.start()
    try:
        old = Order("s.AAAAAAAAAAAAAAAA", "s", "u", 1, 0)
        new = Order("s.BBBBBBBBBBBBBBBB", "s", "v", 1, 1_700_000_000_000)
        await sink.deliver(new)
        assert await sink.statuses([old.order_id, new.order_id]) == {
            old.order_id: "confirmed",  # the migration's default
            new.order_id: "confirmed",
        }
        for _ in range(2):  # the same status again changes nothing
            await sink.set_status(old, "expired", 0)
            await sink.set_status(new, "paid", 0)
        await sink.deliver(new)  # a replayed delivery leaves the status alone
        assert await sink.statuses([old.order_id, new.order_id, "s.CCCCCCCCCCCCCCCC"]) == {
            old.order_id: "expired",
            new.order_id: "paid",
        }
        # a status for an order the sink does not hold: logged, not an error
        await sink.set_status(Order("s.CCCCCCCCCCCCCCCC", "s", "w", 1, 0), "paid", 0)
    finally:
        await sink.close()
    # started again: the table is already migrated
    again = SQLiteSink(path)
    await again.start()
    await again.close()


async def test_expiry_in_a_sale_with_buckets_returns_units_to_each_bucket(
    make_client: MakeClient, redis: Redis
) -> None:
    client = await make_client()
    await create_sale(client, "bk", stock=20, buckets=2, pay_window_s=1)
    orders = await crowd(client, "bk", [f"u{i}" for i in range(20)])
    assert len(orders) == 20
    tags = (await redis.hget(keys.sale("bk"), "tags")).split()
    resp = await client.post(f"/admin/v1/orders/{orders[0]['order_id']}/paid", headers=ADMIN)
    assert resp.status in (200, 409)  # 409 order_not_payable while still queued

    async def expired() -> bool:
        view = await admin_sale(client, "bk")
        return view["orders"]["expired"] + view["orders"]["paid"] == 20

    await until("every order expired or paid", expired, within=WAIT)
    view = await admin_sale(client, "bk")
    assert view["stock_left"] == view["orders"]["expired"]
    for tag in tags:
        assert await redis.zcard(keys.pay_deadlines(tag)) == 0
    resp = await client.post("/admin/v1/reconcile", json={"sale_id": "bk"}, headers=ADMIN)
    assert (await resp.json())["ok"], await resp.json()


async def test_a_status_the_webhook_fails_is_retried_and_a_refused_one_dropped(
    make_client: MakeClient, webhook: Webhook, redis: Redis
) -> None:
    client = await make_client(order_sink=webhook.url, delivery_retries=50)
    await create_sale(client, "wr", stock=2, pay_window_s=60)
    [a, b] = await crowd(client, "wr", ["a", "b"])

    async def delivered() -> bool:
        return (await admin_sale(client, "wr"))["orders"]["confirmed"] == 2

    await until("both confirmed", delivered)
    webhook.fail = True  # 500: outcome unknown, retried
    raw = webhook.raw
    resp = await client.post(f"/admin/v1/orders/{a['order_id']}/paid", headers=ADMIN)
    assert resp.status == 200

    async def tried_twice() -> bool:
        return webhook.raw >= raw + 2

    await until("the status event tried and failed twice", tried_twice)
    webhook.fail = False

    async def recorded() -> bool:
        return webhook.status_keys[f"{a['order_id']}:paid"] == 1

    await until("the paid status recorded once the webhook is back", recorded)
    # a refusal (4xx) is not retried for ever: logged, acknowledged
    webhook.fail, webhook.fail_status = True, 400
    resp = await client.post(f"/admin/v1/orders/{b['order_id']}/cancel", headers=ADMIN)
    assert resp.status == 200

    async def acknowledged() -> bool:
        return (await redis.xlen(keys.stream("wr"))) == 0

    await until("the refused status event acknowledged", acknowledged)
    assert f"{b['order_id']}:cancelled" not in webhook.status_keys


async def test_the_periodic_reconciler_reports_a_drift_once_per_period(
    make_client: MakeClient,
    redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every pipeline process runs it, one pass per sale per period
    cluster-wide; a sale with buckets gets its drift gauge from it; a finding
    made by two passes in a row is logged."""
    monkeypatch.setattr(reconcile, "RECONCILE_PERIOD", 0.3)
    client = await make_client()
    await make_client(role="worker")  # a second pipeline: still one pass per period
    await create_sale(client, "rp", stock=10, buckets=2, pay_window_s=60)
    await crowd(client, "rp", ["a", "b"])
    tag = (await redis.hget(keys.sale("rp"), "tags")).split()[0]
    await redis.hincrby(keys.sale(tag), "stock_left", 1)  # a unit from nowhere

    async def gauge() -> bool:
        text = await (await client.get("/metrics")).text()
        return 'seckill_sale_reconciliation_drift{sale="rp"} -1.0' in text

    await until("the drift gauge of the bucketed sale", gauge)

    async def logged() -> bool:
        return any("reconcile rp: stock_balances" in r.getMessage() for r in caplog.records)

    await until("the finding logged after two passes", logged)
    assert await redis.hget(keys.sale("rp"), "recon_findings") == "stock_balances"
