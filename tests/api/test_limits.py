"""GET/PUT /admin/v1/limits and the 429 answer (docs/API.md §5)."""

from __future__ import annotations

import pytest

from tests.helpers.api import ADMIN, make_app


async def test_limits_api(client, aiohttp_client, settings, redis) -> None:  # type: ignore[no-untyped-def]
    resp = await client.get("/admin/v1/limits", headers=ADMIN)
    assert await resp.json() == {
        "rate": None,
        "burst": 1,
        "per_user_rate": None,
        "per_user_burst": 1,
    }
    resp = await client.put("/admin/v1/limits", json={"rate": 2.5, "burst": 3}, headers=ADMIN)
    assert resp.status == 200
    assert await resp.json() == {
        "rate": 2.5,
        "burst": 3,
        "per_user_rate": None,
        "per_user_burst": 1,
    }
    resp = await client.put("/admin/v1/limits", json={"per_user_rate": 1}, headers=ADMIN)
    assert (await resp.json())["rate"] == 2.5  # fields left out keep their values
    # a new process (a restart) starts with the stored limits
    again = await aiohttp_client(make_app(settings))
    resp = await again.get("/admin/v1/limits", headers=ADMIN)
    assert await resp.json() == {"rate": 2.5, "burst": 3, "per_user_rate": 1.0, "per_user_burst": 1}
    resp = await again.put("/admin/v1/limits", json={"rate": None}, headers=ADMIN)
    assert (await resp.json())["rate"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"rate": 0},
        {"rate": -1},
        {"rate": "10"},
        {"rate": True},
        {"rate": 1e10},
        {"burst": 0},
        {"burst": 1.5},
        {"burst": None},
        {"per_user_burst": "2"},
        {"per_user_rate": []},
        {"speed": 1},
        {},
        [1],
    ],
)
async def test_limits_bad_input(client, body) -> None:  # type: ignore[no-untyped-def]
    resp = await client.put("/admin/v1/limits", json=body, headers=ADMIN)
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_request"


async def test_limits_need_the_admin_token(client) -> None:  # type: ignore[no-untyped-def]
    for method in ("GET", "PUT"):
        resp = await client.request(method, "/admin/v1/limits", json={"rate": 1})
        assert resp.status == 401
        assert (await resp.json())["error"] == "unauthenticated"


async def test_rate_limited_answer_has_retry_after(client) -> None:  # type: ignore[no-untyped-def]
    await client.put("/admin/v1/sales/s", json={"stock": 100}, headers=ADMIN)
    await client.put("/admin/v1/limits", json={"rate": 0.2, "burst": 1}, headers=ADMIN)
    statuses = []
    for i in range(3):
        resp = await client.post("/api/v1/sales/s/orders", headers={"X-User-Id": f"u{i}"})
        statuses.append(resp.status)
        if resp.status == 429:
            assert (await resp.json())["error"] == "rate_limited"
            assert int(resp.headers["Retry-After"]) >= 1
    assert statuses == [202, 429, 429]
