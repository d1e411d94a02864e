"""Admin API over HTTP (docs/API.md §5): the bearer token, creating, updating and reading sales."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from seckill.redis import keys
from tests.helpers.api import ADMIN, ADMIN_FIELDS, ADMIN_TOKEN, at, create_sale


def parse(ts: str) -> datetime:
    return datetime.fromisoformat(ts)


async def put(client: TestClient, sale_id: str, body: Any) -> tuple[int, dict[str, Any]]:
    resp = await client.put(f"/admin/v1/sales/{sale_id}", json=body, headers=ADMIN)
    return resp.status, await resp.json()


async def get(client: TestClient, sale_id: str) -> dict[str, Any]:
    resp = await client.get(f"/admin/v1/sales/{sale_id}", headers=ADMIN)
    assert resp.status == 200, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def buy(client: TestClient, sale_id: str, user_id: str, quantity: int = 1) -> int:
    resp = await client.post(
        f"/api/v1/sales/{sale_id}/orders",
        json={"quantity": quantity},
        headers={"X-User-Id": user_id},
    )
    return resp.status


def assert_error(status: int, body: dict[str, Any], want_status: int, code: str) -> None:
    assert (status, body.get("error")) == (want_status, code), body
    assert set(body) == {"error", "message"}
    assert isinstance(body["message"], str) and body["message"]


# --- the admin token ------------------------------------------------------------------------

ADMIN_ROUTES = [
    ("PUT", "/admin/v1/sales/s1", {"stock": 5}),
    ("GET", "/admin/v1/sales/s1", None),
    ("GET", "/admin/v1/limits", None),
    ("PUT", "/admin/v1/limits", {"rate": 1.0}),
    ("POST", "/admin/v1/orders/s1.AAAAAAAAAAAAAAAA/cancel", None),
    # No sale, malformed id, bad body: the token is checked first all the same.
    ("PUT", "/admin/v1/sales/new", {"stock": 5}),
    ("GET", "/admin/v1/sales/nosuch", None),
    ("PUT", "/admin/v1/sales/-bad", {"stock": 5}),
    ("PUT", "/admin/v1/sales/s1", {"stock": -1}),
]

BAD_AUTH = {
    "missing": {},
    "wrong token": {"Authorization": "Bearer wrong-token-wrong-token"},
    "token prefix": {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"},
    "token suffix": {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
    "basic scheme": {"Authorization": f"Basic {ADMIN_TOKEN}"},
    "no scheme": {"Authorization": ADMIN_TOKEN},
    "empty bearer": {"Authorization": "Bearer "},
    "customer header": {"X-User-Id": "admin"},
}


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ROUTES)
@pytest.mark.parametrize("headers", BAD_AUTH.values(), ids=BAD_AUTH.keys())
async def test_admin_routes_need_the_token(
    client: TestClient,
    redis: Redis,
    method: str,
    path: str,
    body: Any,
    headers: dict[str, str],
) -> None:
    await create_sale(client, "s1", stock=10)
    resp = await client.request(method, path, json=body, headers=headers)
    assert_error(resp.status, await resp.json(), 401, "unauthenticated")
    # Nothing changed.
    assert await redis.exists(keys.sale("new")) == 0
    assert (await get(client, "s1"))["stock_total"] == 10
    assert await redis.exists(keys.LIMITS) == 0


async def test_bearer_scheme_is_case_insensitive(client: TestClient) -> None:
    resp = await client.put(
        "/admin/v1/sales/s1", json={"stock": 1}, headers={"Authorization": f"bearer {ADMIN_TOKEN}"}
    )
    assert resp.status == 201


# --- create --------------------------------------------------------------------------------


async def test_create_with_defaults(client: TestClient, redis: Redis) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    status, view = await put(client, "s1", {"stock": 10})
    assert status == 201
    assert set(view) == ADMIN_FIELDS
    assert view["sale_id"] == "s1"
    assert view["name"] == "s1"
    assert view["status"] == "active"
    assert view["stock_total"] == 10 and view["stock_left"] == 10
    assert view["per_user_limit"] == 1
    assert view["ends_at"] is None
    assert view["starts_at"].endswith("Z")
    assert before <= parse(view["starts_at"]) <= datetime.now(UTC)
    assert view["orders"] == {
        "queued": 0,
        "confirmed": 0,
        "failed": 0,
        "cancelled": 0,
        "undetermined": 0,
        "paid": 0,
        "expired": 0,
    }
    assert view["backlog"] == 0
    assert await redis.sismember(keys.SALES_INDEX, "s1")
    # The GET answers the same object.
    assert await get(client, "s1") == view


async def test_create_with_every_field(client: TestClient) -> None:
    status, view = await put(
        client,
        "s1",
        {
            "name": "Spring drop",
            "stock": 1_000,
            "starts_at": "2030-01-01T10:00:00+02:00",
            "ends_at": "2030-01-02T08:00:00.250Z",
            "per_user_limit": 4,
        },
    )
    assert status == 201
    assert view["name"] == "Spring drop"
    assert view["stock_total"] == 1_000 and view["stock_left"] == 1_000
    assert view["starts_at"] == "2030-01-01T08:00:00Z"
    assert view["ends_at"] == "2030-01-02T08:00:00.250Z"
    assert view["per_user_limit"] == 4
    assert view["status"] == "upcoming"


async def test_create_with_null_times_is_now_and_open_ended(client: TestClient) -> None:
    status, view = await put(client, "s1", {"stock": 1, "starts_at": None, "ends_at": None})
    assert status == 201
    assert view["ends_at"] is None
    assert abs(parse(view["starts_at"]) - datetime.now(UTC)) < timedelta(seconds=5)
    assert view["status"] == "active"


async def test_create_at_the_bounds(client: TestClient) -> None:
    status, view = await put(client, "zero", {"stock": 0})
    assert (status, view["status"]) == (201, "sold_out")
    status, view = await put(client, "big", {"stock": 10**12, "name": "n" * 200})
    assert status == 201
    assert view["stock_left"] == 10**12 and len(view["name"]) == 200


async def test_second_put_is_an_update(client: TestClient) -> None:
    assert (await put(client, "s1", {"stock": 10}))[0] == 201
    status, view = await put(client, "s1", {"stock": 10})
    assert status == 200
    assert set(view) == ADMIN_FIELDS


# --- update --------------------------------------------------------------------------------


async def test_fields_left_out_keep_their_values(client: TestClient) -> None:
    created = await create_sale(
        client,
        "s1",
        name="Original",
        stock=50,
        starts_at="2020-01-01T00:00:00Z",
        ends_at="2999-01-01T00:00:00Z",
        per_user_limit=3,
    )
    status, view = await put(client, "s1", {"name": "Renamed"})
    assert status == 200
    assert view == {**created, "name": "Renamed"}
    status, view = await put(client, "s1", {"per_user_limit": 7})
    assert view == {**created, "name": "Renamed", "per_user_limit": 7}
    status, view = await put(client, "s1", {"ends_at": "2998-01-01T00:00:00Z"})
    assert view == {
        **created,
        "name": "Renamed",
        "per_user_limit": 7,
        "ends_at": "2998-01-01T00:00:00Z",
    }
    # An empty object changes nothing and is not an error.
    status, again = await put(client, "s1", {})
    assert (status, again) == (200, view)
    assert await get(client, "s1") == view


async def test_update_can_reopen_a_sale(client: TestClient) -> None:
    await create_sale(client, "s1", stock=5, starts_at=at(-7200), ends_at=at(-3600))
    assert (await get(client, "s1"))["status"] == "ended"
    status, view = await put(client, "s1", {"ends_at": None})
    assert status == 200
    assert view["ends_at"] is None and view["status"] == "active"
    assert await buy(client, "s1", "alice") == 202


async def test_update_starts_at_null_means_now(client: TestClient) -> None:
    await create_sale(client, "s1", stock=5, starts_at=at(3600))
    status, view = await put(client, "s1", {"starts_at": None})
    assert status == 200
    assert abs(parse(view["starts_at"]) - datetime.now(UTC)) < timedelta(seconds=5)
    assert view["status"] == "active"


async def test_stock_update_moves_stock_left_by_the_difference(client: TestClient) -> None:
    await create_sale(client, "s1", stock=10, per_user_limit=3)
    assert await buy(client, "s1", "alice", 3) == 202
    assert await buy(client, "s1", "bob", 1) == 202

    status, view = await put(client, "s1", {"stock": 20})
    assert status == 200
    assert (view["stock_total"], view["stock_left"]) == (20, 16)
    status, view = await put(client, "s1", {"stock": 5})
    assert (view["stock_total"], view["stock_left"]) == (5, 1)
    # Exactly what is sold: none left.
    status, view = await put(client, "s1", {"stock": 4})
    assert status == 200
    assert (view["stock_total"], view["stock_left"], view["status"]) == (4, 0, "sold_out")
    orders = (await get(client, "s1"))["orders"]
    assert orders["queued"] + orders["confirmed"] == 2


async def test_stock_below_sold_is_a_conflict(client: TestClient) -> None:
    await create_sale(client, "s1", stock=10, per_user_limit=3)
    assert await buy(client, "s1", "alice", 3) == 202
    status, body = await put(client, "s1", {"stock": 2, "name": "Changed"})
    assert_error(status, body, 409, "stock_conflict")
    # Refused as a whole: not even the name moved.
    view = await get(client, "s1")
    assert (view["stock_total"], view["stock_left"], view["name"]) == (10, 7, "s1")


async def test_stock_to_zero_with_nothing_sold(client: TestClient) -> None:
    await create_sale(client, "s1", stock=10)
    status, view = await put(client, "s1", {"stock": 0})
    assert status == 200
    assert (view["stock_total"], view["stock_left"]) == (0, 0)


async def test_update_window_must_stay_ordered(client: TestClient) -> None:
    await create_sale(client, "s1", stock=10, starts_at=at(-60))
    # The stored starts_at (a minute ago) is after this ends_at.
    status, body = await put(client, "s1", {"ends_at": at(-3600)})
    assert_error(status, body, 400, "invalid_request")
    assert (await get(client, "s1"))["ends_at"] is None


# --- validation ----------------------------------------------------------------------------

INVALID_BODIES: dict[str, bytes | dict[str, Any]] = {
    "negative stock": {"stock": -1},
    "bool stock": {"stock": True},
    "float stock": {"stock": 1.5},
    "integral float stock": {"stock": 10.0},
    "string stock": {"stock": "10"},
    "null stock": {"stock": None},
    "huge stock": {"stock": 10**13},
    "absurd stock": {"stock": 10**30},
    "per_user_limit 0": {"stock": 1, "per_user_limit": 0},
    "per_user_limit negative": {"stock": 1, "per_user_limit": -3},
    "per_user_limit string": {"stock": 1, "per_user_limit": "2"},
    "per_user_limit bool": {"stock": 1, "per_user_limit": True},
    "empty name": {"stock": 1, "name": ""},
    "long name": {"stock": 1, "name": "n" * 201},
    "number name": {"stock": 1, "name": 123},
    "list name": {"stock": 1, "name": ["x"]},
    "word timestamp": {"stock": 1, "starts_at": "yesterday"},
    "naive timestamp": {"stock": 1, "starts_at": "2026-01-01T00:00:00"},
    "date only": {"stock": 1, "ends_at": "2026-01-01"},
    "number timestamp": {"stock": 1, "starts_at": 123},
    "bool timestamp": {"stock": 1, "ends_at": True},
    "empty timestamp": {"stock": 1, "ends_at": ""},
    "out of range timestamp": {"stock": 1, "ends_at": "1969-12-31T23:59:59Z"},
    "ends before starts": {
        "stock": 1,
        "starts_at": "2030-01-02T00:00:00Z",
        "ends_at": "2030-01-01T00:00:00Z",
    },
    "ends at starts": {
        "stock": 1,
        "starts_at": "2030-01-01T00:00:00Z",
        "ends_at": "2030-01-01T00:00:00Z",
    },
    "ends in the past with default start": {"stock": 1, "ends_at": "2020-01-01T00:00:00Z"},
    "unknown field": {"stock": 1, "colour": "red"},
    "stock_left is not writable": {"stock": 1, "stock_left": 1},
    "missing stock": {"name": "No stock"},
    "empty object": {},
    "array body": b"[1, 2]",
    "string body": b'"stock"',
    "number body": b"5",
    "null body": b"null",
    "invalid json": b'{"stock": 1',
    "trailing garbage": b'{"stock": 1} x',
    "not utf-8": b'{"name": "\xff", "stock": 1}',
    "empty body": b"",
    "whitespace body": b"  \n",
}


@pytest.mark.parametrize("body", INVALID_BODIES.values(), ids=INVALID_BODIES.keys())
async def test_invalid_create_is_refused(
    client: TestClient, redis: Redis, body: bytes | dict[str, Any]
) -> None:
    kwargs: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
    resp = await client.put("/admin/v1/sales/s1", headers=ADMIN, **kwargs)
    assert resp.content_type == "application/json"
    assert_error(resp.status, await resp.json(), 400, "invalid_request")
    assert await redis.exists(keys.sale("s1")) == 0
    assert not await redis.sismember(keys.SALES_INDEX, "s1")


# Creation-only refusals ("missing stock", "empty object") are fine as updates.
UPDATE_ONLY_OK = {"missing stock", "empty object", "ends in the past with default start"}


@pytest.mark.parametrize(
    "body",
    [b for name, b in INVALID_BODIES.items() if name not in UPDATE_ONLY_OK],
    ids=[name for name in INVALID_BODIES if name not in UPDATE_ONLY_OK],
)
async def test_invalid_update_is_refused(client: TestClient, body: bytes | dict[str, Any]) -> None:
    created = await create_sale(client, "s1", stock=10, starts_at="2020-01-01T00:00:00Z")
    kwargs: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
    resp = await client.put("/admin/v1/sales/s1", headers=ADMIN, **kwargs)
    assert_error(resp.status, await resp.json(), 400, "invalid_request")
    assert await get(client, "s1") == created


@pytest.mark.parametrize("sale_id", ["-bad", "a" * 65, "a%20b", "caf%C3%A9"])
async def test_malformed_sale_id_in_admin_path(client: TestClient, sale_id: str) -> None:
    for method in ("PUT", "GET"):
        resp = await client.request(
            method, f"/admin/v1/sales/{sale_id}", json={"stock": 1}, headers=ADMIN
        )
        assert_error(resp.status, await resp.json(), 400, "invalid_request")


async def test_longest_sale_id_is_accepted(client: TestClient) -> None:
    sale_id = "a" + "b:c.d_e-" * 7 + "f" * 7
    assert len(sale_id) == 64
    status, view = await put(client, sale_id, {"stock": 1})
    assert (status, view["sale_id"], view["name"]) == (201, sale_id, sale_id)


async def test_oversized_admin_body(client: TestClient, redis: Redis) -> None:
    body = b'{"stock": 1, "name": "' + b"x" * 70_000 + b'"}'
    resp = await client.put("/admin/v1/sales/s1", data=body, headers=ADMIN)
    assert_error(resp.status, await resp.json(), 413, "payload_too_large")
    assert await redis.exists(keys.sale("s1")) == 0


# --- GET /admin/v1/sales/{sale_id} ------------------------------------------------------------


async def test_admin_view_counts_orders_and_backlog(client: TestClient) -> None:
    await create_sale(client, "s1", stock=10, per_user_limit=2)
    assert await buy(client, "s1", "alice", 2) == 202
    assert await buy(client, "s1", "bob") == 202
    assert await buy(client, "s1", "bob", 2) == 409
    view = await get(client, "s1")
    assert set(view) == ADMIN_FIELDS
    orders = view["orders"]
    assert set(orders) == {
        "queued",
        "confirmed",
        "failed",
        "cancelled",
        "undetermined",
        "paid",
        "expired",
    }
    # The app's pipeline may confirm either order at any moment.
    assert orders["queued"] + orders["confirmed"] == 2
    assert orders["failed"] == orders["cancelled"] == 0
    assert view["backlog"] == orders["queued"]
    assert view["stock_left"] == 7
    assert view["status"] == "active"


async def test_admin_view_is_never_stale(client: TestClient) -> None:
    await create_sale(client, "s1", stock=3)
    assert (await get(client, "s1"))["stock_left"] == 3
    assert await buy(client, "s1", "alice") == 202
    assert (await get(client, "s1"))["stock_left"] == 2


async def test_admin_view_of_unknown_sale(client: TestClient) -> None:
    resp = await client.get("/admin/v1/sales/nosuch", headers=ADMIN)
    assert_error(resp.status, await resp.json(), 404, "sale_not_found")
