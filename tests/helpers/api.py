"""What the API tests share: the admin token, the view fields, times, the app, a sale,
a crowd of buyers and the admin view of a sale."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from seckill.http.app import create_app
from seckill.settings import Settings

ADMIN_TOKEN = "test-admin-token-0123456789"
#: seconds a crowd may take before the test fails (well before the suite's timeout)
CROWD_TIMEOUT = 60
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
#: the fields of the public sale view (docs/API.md §4) and of the admin view (§5)
PUBLIC_FIELDS = {
    "sale_id",
    "name",
    "status",
    "stock_total",
    "stock_left",
    "starts_at",
    "ends_at",
    "per_user_limit",
}
ADMIN_FIELDS = PUBLIC_FIELDS | {"orders", "backlog", "buckets", "pay_window_s"}


def at(seconds_from_now: float) -> str:
    """An RFC 3339 UTC timestamp *seconds_from_now* away (negative = past)."""
    dt = datetime.now(UTC) + timedelta(seconds=seconds_from_now)
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_app(settings: Settings) -> web.Application:
    assert settings.redis_url is not None
    return create_app(settings, settings.redis_url, ADMIN_TOKEN)


async def create_sale(client: TestClient, sale_id: str = "s1", **fields: object) -> dict:  # type: ignore[type-arg]
    body = {"stock": 10, **fields}
    resp = await client.put(f"/admin/v1/sales/{sale_id}", json=body, headers=ADMIN)
    assert resp.status == 201, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def crowd(client: TestClient, sale: str, users: list[str]) -> list[dict[str, Any]]:  # type: ignore[type-arg]
    """One buy per user, all at once: the bodies of the 202s (every answer is
    a 202 or a 409)."""

    async def buy(user: str) -> tuple[int, dict[str, Any]]:
        resp = await client.post(f"/api/v1/sales/{sale}/orders", headers={"X-User-Id": user})
        return resp.status, await resp.json()

    try:
        async with asyncio.timeout(CROWD_TIMEOUT):
            answers = await asyncio.gather(*(buy(u) for u in users))
    except TimeoutError:
        raise AssertionError(
            f"a crowd of {len(users)} on sale {sale} not answered in {CROWD_TIMEOUT}s"
        ) from None
    assert {s for s, _ in answers} <= {202, 409}, answers
    return [body for status, body in answers if status == 202]


async def admin_sale(client: TestClient, sale: str) -> dict[str, Any]:  # type: ignore[type-arg]
    resp = await client.get(f"/admin/v1/sales/{sale}", headers=ADMIN)
    assert resp.status == 200
    return await resp.json()  # type: ignore[no-any-return]
