"""The pay window over HTTP (issue 15): the sale field, POST …/paid, the
sweeper, the sinks' statuses, reconcile — and the issue's "Done when"
scenario, with a 2 s window to stay fast."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from click.testing import CliRunner
from redis.asyncio import Redis

from seckill.cli import cli
from seckill.redis import keys
from seckill.settings import Settings
from tests.helpers.api import ADMIN, ADMIN_TOKEN, admin_sale, create_sale, crowd

#: seconds a condition may take before the test fails
WAIT = 30.0


async def until(what: str, check: Callable[[], Awaitable[bool]], within: float = WAIT) -> None:
    """Wait for *check* to hold, polling, with a deadline."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.05)


async def pay(client: TestClient, order_id: str) -> tuple[int, dict[str, Any]]:
    resp = await client.post(f"/admin/v1/orders/{order_id}/paid", headers=ADMIN)
    return resp.status, await resp.json()


def sink_statuses(path: Path, sale: str) -> Counter[str]:
    if not path.exists():
        return Counter()
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT status FROM orders WHERE sale_id = ?", (sale,)).fetchall()
    finally:
        db.close()
    return Counter(r[0] for r in rows)


async def confirmed_count(client: TestClient, sale: str, n: int) -> None:
    async def done() -> bool:
        return (await admin_sale(client, sale))["orders"]["confirmed"] >= n

    await until(f"{n} orders of {sale} confirmed", done)


async def test_pay_window_field_is_validated(client: TestClient) -> None:
    for bad in (0, -1, 1.5, "6", True, 30 * 86_400 + 1):
        resp = await client.put(
            "/admin/v1/sales/bad", json={"stock": 1, "pay_window_s": bad}, headers=ADMIN
        )
        assert resp.status == 400, bad
        assert (await resp.json())["error"] == "invalid_request"
    view = await create_sale(client, "pw", stock=3, pay_window_s=60)
    assert view["pay_window_s"] == 60
    resp = await client.put("/admin/v1/sales/pw", json={"pay_window_s": None}, headers=ADMIN)
    assert resp.status == 200 and (await resp.json())["pay_window_s"] is None


async def test_paid_endpoint_answers(client: TestClient, settings: Settings) -> None:
    await create_sale(client, "pw", stock=5, pay_window_s=60)
    [a, b] = await crowd(client, "pw", ["a", "b"])
    await confirmed_count(client, "pw", 2)
    status, order = await pay(client, a["order_id"])
    assert (status, order["status"]) == (200, "paid")
    assert "pay_deadline" not in order
    status, order = await pay(client, a["order_id"])  # idempotent
    assert (status, order["status"]) == (200, "paid")
    resp = await client.get(f"/api/v1/orders/{b['order_id']}", headers={"X-User-Id": "b"})
    assert (await resp.json())["pay_deadline"].endswith("Z")
    assert (await pay(client, "pw.AAAAAAAAAAAAAAAA"))[0] == 404
    status, body = await pay(client, "not-an-order")
    assert (status, body["error"]) == (400, "invalid_request")
    resp = await client.post(f"/admin/v1/orders/{a['order_id']}/paid")
    assert resp.status == 401
    # the cancel of a confirmed order reaches the sink
    resp = await client.post(f"/admin/v1/orders/{b['order_id']}/cancel", headers=ADMIN)
    assert resp.status == 200
    sink = settings.data_dir / "orders.db"

    async def told() -> bool:
        return sink_statuses(sink, "pw") == Counter({"paid": 1, "cancelled": 1})

    await until("the sink hears paid and cancelled", told)
    # a cancelled order cannot be paid
    status, body = await pay(client, b["order_id"])
    assert (status, body["error"]) == (409, "order_not_payable")


async def test_done_when_scenario(
    client: TestClient, settings: Settings, redis: Redis, window: int = 2
) -> None:
    """A sale of 100 with a short window; a crowd buys all 100; 60 paid; the
    other 40 expire within 2 s of their deadline; stock 40 again; a paid buyer
    cannot buy, an expired one can; a second crowd buys exactly the rest; a
    late paid is 409; the sink ends with 60 paid, 40 expired, 40 confirmed;
    reconcile passes (over HTTP and as the CLI)."""
    sale = "hot"
    await create_sale(client, sale, stock=100, pay_window_s=window)
    first = await crowd(client, sale, [f"u{i}" for i in range(130)])
    assert len(first) == 100
    await confirmed_count(client, sale, 100)
    paid, unpaid = first[:60], first[60:]
    answers = await asyncio.gather(*(pay(client, o["order_id"]) for o in paid))
    assert {s for s, _ in answers} == {200}

    async def expired() -> bool:
        return (await admin_sale(client, sale))["orders"]["expired"] == 40

    await until("40 orders expired", expired, within=window + 10)
    view = await admin_sale(client, sale)
    assert view["stock_left"] == 40
    assert view["orders"] == {
        "queued": 0,
        "confirmed": 0,
        "failed": 0,
        "cancelled": 0,
        "undetermined": 0,
        "paid": 60,
        "expired": 40,
    }
    # each expired within 2 s after its deadline (Redis's clock)
    lateness = []
    for o in unpaid:
        h = await redis.hgetall(keys.order(sale, o["order_id"]))
        assert h["status"] == "expired"
        lateness.append(int(h["expired_at"]) - int(h["pay_deadline"]))
    assert min(lateness) >= 0 and max(lateness) <= 2000, lateness

    # the sale is active again on every path (its sold-out flag cleared)
    resp = await client.get(f"/api/v1/sales/{sale}")
    assert (await resp.json())["stock_left"] == 40
    paid_user = paid[0]["order_id"]
    paid_buyer = await redis.hget(keys.order(sale, paid_user), "user_id")
    resp = await client.post(f"/api/v1/sales/{sale}/orders", headers={"X-User-Id": paid_buyer})
    assert (resp.status, (await resp.json())["error"]) == (409, "limit_reached")
    expired_buyer = await redis.hget(keys.order(sale, unpaid[0]["order_id"]), "user_id")
    resp = await client.post(f"/api/v1/sales/{sale}/orders", headers={"X-User-Id": expired_buyer})
    assert resp.status == 202
    # a second crowd: the other expired buyers, the paid ones, new ones
    others = [
        await redis.hget(keys.order(sale, o["order_id"]), "user_id") for o in unpaid[1:] + paid
    ]
    second = await crowd(client, sale, [*others, *(f"n{i}" for i in range(40))])
    assert len(second) == 39  # with the expired buyer's: exactly the 40
    assert not {o["order_id"] for o in second} & {o["order_id"] for o in paid}
    status, body = await pay(client, unpaid[1]["order_id"])
    assert (status, body["error"]) == (409, "order_expired")
    await confirmed_count(client, sale, 40)
    assert (await admin_sale(client, sale))["stock_left"] == 0

    sink = settings.data_dir / "orders.db"

    async def books() -> bool:
        return sink_statuses(sink, sale) == Counter({"paid": 60, "expired": 40, "confirmed": 40})

    await until("the sink holds 60 paid, 40 expired, 40 confirmed", books)
    resp = await client.post("/admin/v1/reconcile", json={"sale_id": sale}, headers=ADMIN)
    report = await resp.json()
    assert resp.status == 200 and report["ok"], report
    names = [c["name"] for c in report["sales"][0]["checks"]]
    assert names == [
        "stock_balances",
        "units_match_orders",
        "stream_consistent",
        "deadlines_consistent",
        "sink_statuses_match",
    ]
    url = str(client.make_url(""))
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["reconcile", sale, "--url", url, "--token", ADMIN_TOKEN]
    )
    assert result.exit_code == 0, result.output
    assert "PASS sink_statuses_match" in result.output


async def test_reconcile_finds_and_repairs(client: TestClient, redis: Redis) -> None:
    sale = "rc"
    await create_sale(client, sale, stock=5, pay_window_s=60)
    [a, _] = await crowd(client, sale, ["a", "b"])
    await confirmed_count(client, sale, 2)
    # a lost deadline (repairable) and a units hash that drifted (reported only)
    await redis.zrem(keys.pay_deadlines(sale), a["order_id"])
    await redis.hincrby(keys.units(sale), "b", 1)
    resp = await client.post("/admin/v1/reconcile", json={"sale_id": sale}, headers=ADMIN)
    report = (await resp.json())["sales"][0]
    failed = {c["name"] for c in report["checks"] if not c["ok"]}
    assert failed == {"units_match_orders", "deadlines_consistent"}
    resp = await client.post(
        "/admin/v1/reconcile", json={"sale_id": sale, "repair": True}, headers=ADMIN
    )
    report = (await resp.json())["sales"][0]
    assert report["repaired"] == [f"{a['order_id']}: pay deadline added"]
    assert await redis.zscore(keys.pay_deadlines(sale), a["order_id"]) is not None
    resp = await client.post("/admin/v1/reconcile", json={"sale_id": sale}, headers=ADMIN)
    body = await resp.json()
    assert not body["ok"]
    assert [c["name"] for c in body["sales"][0]["checks"] if not c["ok"]] == ["units_match_orders"]
    resp = await client.post("/admin/v1/reconcile", json={"sale_id": "nope"}, headers=ADMIN)
    assert resp.status == 404
    resp = await client.post("/admin/v1/reconcile", json={"repair": "yes"}, headers=ADMIN)
    assert resp.status == 400
