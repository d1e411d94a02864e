"""Customer API over HTTP (docs/API.md §4): buy, order status, public sale view.

Every test runs the real app against the session's real Redis. Where a test
depends on this process's sale cache (the local sold-out flag), it first waits
for the pub/sub listener to have applied every event published so far, so
that a late "sale changed" event cannot clear the flag under the test.

The app's order pipeline runs meanwhile and may confirm any order at any
moment (into the test's SQLite sink), so counts are checked as
``queued + confirmed`` unless a test waits for the confirmation itself.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from seckill.http.state import RUNTIME
from seckill.redis import keys
from seckill.redis.events import publish_sale_changed
from tests.helpers.api import ADMIN, PUBLIC_FIELDS, at, create_sale

RFC3339_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z$")


def user(name: str) -> dict[str, str]:
    return {"X-User-Id": name}


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Poll *condition* until it holds; fail after *within* seconds."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.005)


async def settle_events(client: TestClient) -> None:
    """Wait until the app's event listener has applied every event published so far.

    Pub/sub delivers in order on one subscription, so once a marker event
    published now has reached the cache, every earlier one has too.
    """
    rt = client.app[RUNTIME]
    await until(lambda: rt.listening)
    marker = f"sync-{uuid.uuid4().hex}"
    deadline = time.monotonic() + 5.0
    while rt.cache.generation(marker) == 0:
        assert time.monotonic() < deadline, "event listener did not catch up"
        await publish_sale_changed(rt.redis, marker)
        await asyncio.sleep(0.01)


async def buy(
    client: TestClient,
    sale_id: str,
    user_id: str,
    quantity: int | None = None,
    idem: str | None = None,
) -> tuple[int, dict[str, Any], Any]:
    headers = user(user_id)
    if idem is not None:
        headers["Idempotency-Key"] = idem
    body = None if quantity is None else {"quantity": quantity}
    resp = await client.post(f"/api/v1/sales/{sale_id}/orders", json=body, headers=headers)
    return resp.status, await resp.json(), resp


async def admin_view(client: TestClient, sale_id: str) -> dict[str, Any]:
    resp = await client.get(f"/admin/v1/sales/{sale_id}", headers=ADMIN)
    assert resp.status == 200, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


def admitted_count(view: dict[str, Any]) -> int:
    """Orders that hold stock (queued or confirmed), checking the other counters."""
    orders = view["orders"]
    assert orders["failed"] == 0 and orders["cancelled"] == 0, orders
    assert view["backlog"] == orders["queued"], view
    return int(orders["queued"] + orders["confirmed"])


async def wait_confirmed(client: TestClient, order_id: str, user_id: str) -> dict[str, Any]:
    """Poll the order until the pipeline has confirmed it (it finds a new sale within ~1 s)."""
    deadline = time.monotonic() + 10.0
    while True:
        resp = await client.get(f"/api/v1/orders/{order_id}", headers=user(user_id))
        assert resp.status == 200
        order = await resp.json()
        if order["status"] == "confirmed":
            return order  # type: ignore[no-any-return]
        assert order["status"] == "queued", order
        assert time.monotonic() < deadline, "the order was never confirmed"
        await asyncio.sleep(0.05)


def assert_error(status: int, body: dict[str, Any], want_status: int, code: str) -> None:
    assert (status, body.get("error")) == (want_status, code), body
    assert set(body) == {"error", "message"}
    assert isinstance(body["message"], str) and body["message"]


# --- buy: the happy path -------------------------------------------------------


async def test_buy_answers_202_with_order_and_location(client: TestClient, redis: Redis) -> None:
    await create_sale(client, "s1", stock=5)
    status, body, resp = await buy(client, "s1", "alice")
    assert status == 202
    assert resp.content_type == "application/json"
    assert set(body) == {"order_id", "sale_id", "quantity", "status"}
    assert body["sale_id"] == "s1"
    assert body["quantity"] == 1
    assert body["status"] == "queued"
    assert keys.sale_of_order(body["order_id"]) == "s1"
    assert resp.headers["Location"] == f"/api/v1/orders/{body['order_id']}"
    # The order is durable in Redis before the 202 goes out.
    assert await redis.xlen(keys.stream("s1")) == 1
    order = await redis.hgetall(keys.order("s1", body["order_id"]))
    assert order["user_id"] == "alice" and order["quantity"] == "1"
    view = await admin_view(client, "s1")
    assert view["stock_left"] == 4
    assert admitted_count(view) == 1


async def test_buy_with_empty_object_or_no_body_means_quantity_one(client: TestClient) -> None:
    await create_sale(client, "s1", stock=5)
    resp = await client.post("/api/v1/sales/s1/orders", data=b"{}", headers=user("a"))
    assert resp.status == 202
    assert (await resp.json())["quantity"] == 1
    resp = await client.post("/api/v1/sales/s1/orders", headers=user("b"))
    assert resp.status == 202
    assert (await resp.json())["quantity"] == 1
    assert (await admin_view(client, "s1"))["stock_left"] == 3


async def test_each_order_id_is_new(client: TestClient) -> None:
    await create_sale(client, "s1", stock=10)
    ids = set()
    for i in range(5):
        status, body, _ = await buy(client, "s1", f"u{i}")
        assert status == 202
        ids.add(body["order_id"])
    assert len(ids) == 5


async def test_quantity_up_to_per_user_limit(client: TestClient) -> None:
    await create_sale(client, "s1", stock=10, per_user_limit=3)
    status, body, _ = await buy(client, "s1", "alice", quantity=3)
    assert status == 202
    assert body["quantity"] == 3
    assert (await admin_view(client, "s1"))["stock_left"] == 7
    # Alice now holds the limit: even one more unit is refused.
    status, body, _ = await buy(client, "s1", "alice", quantity=1)
    assert_error(status, body, 409, "limit_reached")
    # Another user is unaffected.
    status, body, _ = await buy(client, "s1", "bob", quantity=2)
    assert status == 202 and body["quantity"] == 2
    assert (await admin_view(client, "s1"))["stock_left"] == 5


async def test_limit_reached_counts_units_across_orders(client: TestClient) -> None:
    await create_sale(client, "s1", stock=10, per_user_limit=3)
    assert (await buy(client, "s1", "alice", quantity=2))[0] == 202
    status, body, _ = await buy(client, "s1", "alice", quantity=2)
    assert_error(status, body, 409, "limit_reached")
    assert (await buy(client, "s1", "alice", quantity=1))[0] == 202
    status, body, _ = await buy(client, "s1", "alice", quantity=1)
    assert_error(status, body, 409, "limit_reached")
    assert (await admin_view(client, "s1"))["stock_left"] == 7


async def test_limit_reached_with_default_limit_of_one(client: TestClient, redis: Redis) -> None:
    await create_sale(client, "s1", stock=10)
    assert (await buy(client, "s1", "alice"))[0] == 202
    status, body, _ = await buy(client, "s1", "alice")
    assert_error(status, body, 409, "limit_reached")
    assert await redis.xlen(keys.stream("s1")) == 1
    assert (await admin_view(client, "s1"))["stock_left"] == 9


# --- buy: sold out and the local sold-out flag ------------------------------------


async def test_sold_out(client: TestClient, redis: Redis) -> None:
    await create_sale(client, "s1", stock=2, per_user_limit=2)
    assert (await buy(client, "s1", "alice"))[0] == 202
    # One unit left: a buy of two is refused as sold out, not partly filled.
    status, body, _ = await buy(client, "s1", "bob", quantity=2)
    assert_error(status, body, 409, "sold_out")
    assert (await buy(client, "s1", "bob"))[0] == 202
    status, body, _ = await buy(client, "s1", "carol")
    assert_error(status, body, 409, "sold_out")
    assert await redis.xlen(keys.stream("s1")) == 2
    view = await admin_view(client, "s1")
    assert view["stock_left"] == 0 and view["status"] == "sold_out"


async def test_zero_stock_sale_is_sold_out(client: TestClient) -> None:
    await create_sale(client, "s1", stock=0)
    status, body, _ = await buy(client, "s1", "alice")
    assert_error(status, body, 409, "sold_out")


async def test_sold_out_flag_answers_without_redis(client: TestClient, redis: Redis) -> None:
    await create_sale(client, "s1", stock=1)
    await settle_events(client)
    assert (await buy(client, "s1", "alice"))[0] == 202
    # The sale hash is gone: a buy that reached Redis would be 404 sale_not_found.
    await redis.delete(keys.sale("s1"))
    for name in ("bob", "carol", "alice"):
        status, body, _ = await buy(client, "s1", name)
        assert_error(status, body, 409, "sold_out")
    # Nothing else was touched in Redis either (no order, no bucket).
    assert await redis.xlen(keys.stream("s1")) == 1


async def test_sold_out_answer_from_redis_also_sets_the_flag(
    client: TestClient, redis: Redis
) -> None:
    await create_sale(client, "s1", stock=0)
    await settle_events(client)
    status, body, _ = await buy(client, "s1", "alice")
    assert_error(status, body, 409, "sold_out")
    await redis.delete(keys.sale("s1"))
    status, body, _ = await buy(client, "s1", "bob")
    assert_error(status, body, 409, "sold_out")


async def test_restock_clears_the_sold_out_flag(client: TestClient, redis: Redis) -> None:
    await create_sale(client, "s1", stock=1)
    await settle_events(client)
    assert (await buy(client, "s1", "alice"))[0] == 202
    status, body, _ = await buy(client, "s1", "bob")
    assert_error(status, body, 409, "sold_out")
    assert client.app[RUNTIME].cache.is_sold_out("s1")

    resp = await client.put("/admin/v1/sales/s1", json={"stock": 3}, headers=ADMIN)
    assert resp.status == 200
    assert (await resp.json())["stock_left"] == 2
    # Right after the restock, with no wait for any event.
    status, body, _ = await buy(client, "s1", "bob")
    assert status == 202, body
    assert (await buy(client, "s1", "carol"))[0] == 202
    status, body, _ = await buy(client, "s1", "dave")
    assert_error(status, body, 409, "sold_out")
    assert await redis.xlen(keys.stream("s1")) == 3


async def test_cancel_clears_the_sold_out_flag(client: TestClient) -> None:
    await create_sale(client, "s1", stock=1)
    await settle_events(client)
    _, bought, _ = await buy(client, "s1", "alice")
    assert client.app[RUNTIME].cache.is_sold_out("s1")
    resp = await client.post(f"/admin/v1/orders/{bought['order_id']}/cancel", headers=ADMIN)
    assert resp.status == 200
    # The unit is back and the flag is gone at once, for anyone, the canceller too.
    status, body, _ = await buy(client, "s1", "alice")
    assert status == 202, body
    status, body, _ = await buy(client, "s1", "bob")
    assert_error(status, body, 409, "sold_out")


async def test_restock_published_by_another_process_clears_the_flag(
    client: TestClient, redis: Redis
) -> None:
    """A restock done elsewhere reaches this process through the pub/sub event."""
    await create_sale(client, "s1", stock=1)
    await settle_events(client)
    assert (await buy(client, "s1", "alice"))[0] == 202
    assert client.app[RUNTIME].cache.is_sold_out("s1")
    # "Another process": change the hash directly and publish as admin.py does.
    await redis.hset(keys.sale("s1"), mapping={"stock_total": 2, "stock_left": 1})
    await publish_sale_changed(redis, "s1")
    await until(lambda: not client.app[RUNTIME].cache.is_sold_out("s1"))
    assert (await buy(client, "s1", "bob"))[0] == 202


# --- buy: sale window and unknown sale ------------------------------------------------


async def test_sale_not_started(client: TestClient, redis: Redis) -> None:
    await create_sale(client, "s1", stock=5, starts_at=at(3600))
    status, body, _ = await buy(client, "s1", "alice")
    assert_error(status, body, 403, "sale_not_started")
    assert await redis.xlen(keys.stream("s1")) == 0


async def test_sale_moved_to_the_future_is_not_started(client: TestClient) -> None:
    await create_sale(client, "s1", stock=5)
    assert (await buy(client, "s1", "alice"))[0] == 202
    resp = await client.put("/admin/v1/sales/s1", json={"starts_at": at(3600)}, headers=ADMIN)
    assert resp.status == 200
    status, body, _ = await buy(client, "s1", "bob")
    assert_error(status, body, 403, "sale_not_started")


async def test_sale_ended(client: TestClient, redis: Redis) -> None:
    await create_sale(client, "s1", stock=5, starts_at=at(-7200), ends_at=at(-3600))
    status, body, _ = await buy(client, "s1", "alice")
    assert_error(status, body, 403, "sale_ended")
    assert await redis.xlen(keys.stream("s1")) == 0


async def test_sale_closed_by_update_is_ended(client: TestClient) -> None:
    await create_sale(client, "s1", stock=5, ends_at=at(3600))
    assert (await buy(client, "s1", "alice"))[0] == 202
    # ends_at must stay after starts_at, so both move into the past.
    resp = await client.put(
        "/admin/v1/sales/s1",
        json={"starts_at": at(-7200), "ends_at": at(-60)},
        headers=ADMIN,
    )
    assert resp.status == 200, await resp.text()
    status, body, _ = await buy(client, "s1", "bob")
    assert_error(status, body, 403, "sale_ended")


async def test_ended_wins_over_sold_out(client: TestClient) -> None:
    await create_sale(client, "s1", stock=0, starts_at=at(-7200), ends_at=at(-3600))
    status, body, _ = await buy(client, "s1", "alice")
    assert_error(status, body, 403, "sale_ended")


async def test_sale_not_found(client: TestClient, redis: Redis) -> None:
    status, body, _ = await buy(client, "nosuch", "alice")
    assert_error(status, body, 404, "sale_not_found")
    assert await redis.xlen(keys.stream("nosuch")) == 0


# --- buy: Idempotency-Key ----------------------------------------------------------


async def test_idempotency_key_replay_returns_the_same_order(
    client: TestClient, redis: Redis
) -> None:
    await create_sale(client, "s1", stock=10)
    s1, first, r1 = await buy(client, "s1", "alice", idem="key-1")
    s2, second, r2 = await buy(client, "s1", "alice", idem="key-1")
    assert (s1, s2) == (202, 202)
    assert first == second
    assert r1.headers["Location"] == r2.headers["Location"]
    # One order, one unit of stock: the replay did not consume anything.
    assert await redis.xlen(keys.stream("s1")) == 1
    view = await admin_view(client, "s1")
    assert view["stock_left"] == 9
    assert admitted_count(view) == 1


async def test_idempotency_key_is_per_user(client: TestClient, redis: Redis) -> None:
    await create_sale(client, "s1", stock=10)
    _, a, _ = await buy(client, "s1", "alice", idem="shared")
    status, b, _ = await buy(client, "s1", "bob", idem="shared")
    assert status == 202
    assert a["order_id"] != b["order_id"]
    assert await redis.xlen(keys.stream("s1")) == 2
    assert (await admin_view(client, "s1"))["stock_left"] == 8


async def test_new_idempotency_key_is_a_new_buy(client: TestClient) -> None:
    await create_sale(client, "s1", stock=10)
    assert (await buy(client, "s1", "alice", idem="k1"))[0] == 202
    status, body, _ = await buy(client, "s1", "alice", idem="k2")
    assert_error(status, body, 409, "limit_reached")


async def test_replay_keeps_the_original_quantity_and_shows_current_status(
    client: TestClient, redis: Redis
) -> None:
    await create_sale(client, "s1", stock=10, per_user_limit=3)
    _, first, _ = await buy(client, "s1", "alice", quantity=2, idem="k")
    await wait_confirmed(client, first["order_id"], "alice")
    status, again, _ = await buy(client, "s1", "alice", quantity=1, idem="k")
    assert status == 202
    assert again["order_id"] == first["order_id"]
    assert again["quantity"] == 2
    assert again["status"] == "confirmed"
    assert (await admin_view(client, "s1"))["stock_left"] == 8


async def test_replay_after_sell_out_returns_the_order(client: TestClient) -> None:
    """A client whose 202 was lost retries with its key after the sale sold out."""
    await create_sale(client, "s1", stock=1)
    await settle_events(client)
    _, first, _ = await buy(client, "s1", "alice", idem="retry-me")
    assert client.app[RUNTIME].cache.is_sold_out("s1")
    status, again, _ = await buy(client, "s1", "alice", idem="retry-me")
    assert status == 202, again
    assert again["order_id"] == first["order_id"]
    # A fresh key (or another user) still gets the fast sold-out answer.
    status, body, _ = await buy(client, "s1", "alice", idem="other")
    assert_error(status, body, 409, "sold_out")
    status, body, _ = await buy(client, "s1", "bob", idem="retry-me")
    assert_error(status, body, 409, "sold_out")


async def test_replay_after_the_sale_ended_returns_the_order(client: TestClient) -> None:
    await create_sale(client, "s1", stock=5, ends_at=at(3600))
    _, first, _ = await buy(client, "s1", "alice", idem="k")
    resp = await client.put(
        "/admin/v1/sales/s1", json={"starts_at": at(-7200), "ends_at": at(-60)}, headers=ADMIN
    )
    assert resp.status == 200
    status, again, _ = await buy(client, "s1", "alice", idem="k")
    assert status == 202
    assert again["order_id"] == first["order_id"]


async def test_concurrent_retries_with_one_key_make_one_order(
    client: TestClient, redis: Redis
) -> None:
    await create_sale(client, "s1", stock=10, per_user_limit=5)
    results = await asyncio.gather(*(buy(client, "s1", "alice", idem="k") for _ in range(30)))
    assert {status for status, _, _ in results} == {202}
    assert len({body["order_id"] for _, body, _ in results}) == 1
    assert await redis.xlen(keys.stream("s1")) == 1
    assert (await admin_view(client, "s1"))["stock_left"] == 9


async def test_idempotency_key_of_64_chars_is_accepted_and_replays(
    client: TestClient, redis: Redis
) -> None:
    await create_sale(client, "s1", stock=10, per_user_limit=2)
    key = "k" * 63 + "~"
    status, first, _ = await buy(client, "s1", "alice", idem=key)
    assert status == 202
    status, again, _ = await buy(client, "s1", "alice", idem=key)
    assert (status, again) == (202, first)
    # the whole key counts: one character less is another key, another order
    status, other, _ = await buy(client, "s1", "alice", idem=key[:-1])
    assert status == 202 and other["order_id"] != first["order_id"]
    assert await redis.xlen(keys.stream("s1")) == 2


async def test_idempotency_keys_of_two_users_never_collide(
    client: TestClient, redis: Redis
) -> None:
    """User `a` with key `b:c`, then user `a:b` with key `c`: two buys, and
    neither learns the other's order id."""
    await create_sale(client, "s1", stock=10)
    status, a, _ = await buy(client, "s1", "a", idem="b:c")
    assert status == 202
    status, ab, _ = await buy(client, "s1", "a:b", idem="c")
    assert status == 202, ab
    assert ab["order_id"] != a["order_id"]
    assert (await buy(client, "s1", "a:b", idem="c"))[1] == ab
    assert (await buy(client, "s1", "a", idem="b:c"))[1] == a
    for name, body in (("a", a), ("a:b", ab)):
        assert await redis.hget(keys.order("s1", body["order_id"]), "user_id") == name
    assert await redis.xlen(keys.stream("s1")) == 2
    assert (await admin_view(client, "s1"))["stock_left"] == 8


async def test_an_old_layout_key_of_another_user_is_no_replay_after_a_sell_out(
    client: TestClient, redis: Redis
) -> None:
    """A key left by the version before (`…:idem:a:b:c`, user `a`'s) matches user
    `a:b` with key `c` too: after the sell-out `a:b` is told sold out, not
    handed `a`'s order; `a` gets its order back."""
    await create_sale(client, "s1", stock=1)
    await settle_events(client)
    _, a, _ = await buy(client, "s1", "a")
    await redis.set(keys.legacy_idem("s1", "a", "b:c"), a["order_id"], ex=60)
    status, body, _ = await buy(client, "s1", "a:b", idem="c")
    assert_error(status, body, 409, "sold_out")
    status, again, _ = await buy(client, "s1", "a", idem="b:c")
    assert (status, again) == (202, a)


async def test_concurrent_buys_with_shared_and_colliding_keys(
    client: TestClient, redis: Redis
) -> None:
    """480 buys at once: 120 users in pairs whose (user, key) met in one Redis
    key in the old layout (`pI` + `q:k`, `pI:q` + `k`), each sending its key
    twice and the key `same`, shared by everyone, twice. Stock 150, two units
    each. Nobody gets another user's order; one key of one user, one order;
    the stock adds up (docs/API.md §6)."""
    stock, limit = 150, 2
    await create_sale(client, "idem", stock=stock, per_user_limit=limit)
    calls: list[tuple[str, str]] = []
    for i in range(60):
        calls += [(f"p{i}", "q:k"), (f"p{i}:q", "k")] * 2
        calls += [(f"p{i}", "same"), (f"p{i}:q", "same")] * 2
    results = await asyncio.gather(*(buy(client, "idem", u, idem=k) for u, k in calls))

    orders_of: dict[tuple[str, str], set[str]] = {}
    owner: dict[str, str] = {}
    for (name, key), (status, body, _) in zip(calls, results, strict=True):
        if status == 202:
            orders_of.setdefault((name, key), set()).add(body["order_id"])
            assert owner.setdefault(body["order_id"], name) == name, "an order shown to two users"
        else:
            assert (status, body["error"]) in {(409, "sold_out"), (409, "limit_reached")}, body
    assert all(len(ids) == 1 for ids in orders_of.values()), "one key of one user, one order"
    assert len(owner) == stock, "every unit sold, each once"
    for order_id, name in owner.items():
        assert await redis.hget(keys.order("idem", order_id), "user_id") == name
    entries = await redis.xrange(keys.stream("idem"))
    assert {e["order_id"]: e["user_id"] for _, e in entries} == owner
    held = {u: int(n) for u, n in (await redis.hgetall(keys.units("idem"))).items()}
    assert held == dict(Counter(owner.values()))
    assert max(held.values()) <= limit
    view = await admin_view(client, "idem")
    assert view["stock_left"] == 0 and admitted_count(view) == stock


async def test_bad_idempotency_key_is_refused_before_any_stock_moves(
    client: TestClient, redis: Redis
) -> None:
    await create_sale(client, "s1", stock=10)
    for bad in ("k" * 65, "", "has space"):
        status, body, _ = await buy(client, "s1", "alice", idem=bad)
        assert_error(status, body, 400, "invalid_request")
    assert await redis.xlen(keys.stream("s1")) == 0
    assert (await admin_view(client, "s1"))["stock_left"] == 10


# --- the signature test: hundreds of concurrent buys -------------------------------------


async def test_concurrent_buys_sell_exactly_the_stock(client: TestClient, redis: Redis) -> None:
    stock, users = 100, 300
    await create_sale(client, "flash", stock=stock, per_user_limit=1)
    # Every user tries twice, all at once: 600 requests in flight.
    attempts = [f"user-{i}" for i in range(users)] * 2
    results = await asyncio.gather(*(buy(client, "flash", name) for name in attempts))

    admitted = [
        (name, body)
        for name, (status, body, _) in zip(attempts, results, strict=True)
        if status == 202
    ]
    refused = Counter((status, body.get("error")) for status, body, _ in results if status != 202)
    assert len(admitted) == stock
    assert len({name for name, _ in admitted}) == stock, "a user got more than per_user_limit"
    assert len({body["order_id"] for _, body in admitted}) == stock
    assert set(refused) <= {(409, "sold_out"), (409, "limit_reached")}, refused
    assert sum(refused.values()) == len(attempts) - stock

    assert await redis.xlen(keys.stream("flash")) == stock
    entries = await redis.xrange(keys.stream("flash"))
    assert {e["order_id"] for _, e in entries} == {body["order_id"] for _, body in admitted}
    held = await redis.hgetall(keys.units("flash"))
    assert len(held) == stock and set(held.values()) == {"1"}
    for name, body in admitted:
        order = await redis.hgetall(keys.order("flash", body["order_id"]))
        assert order["user_id"] == name

    view = await admin_view(client, "flash")
    assert (view["stock_total"], view["stock_left"]) == (stock, 0)
    assert view["status"] == "sold_out"
    assert admitted_count(view) == stock


# --- GET /api/v1/orders/{order_id} ---------------------------------------------------------


async def test_owner_sees_the_order(client: TestClient) -> None:
    await create_sale(client, "s1", stock=10, per_user_limit=2)
    before = datetime.now(UTC)
    _, bought, resp = await buy(client, "s1", "alice", quantity=2)
    got = await client.get(resp.headers["Location"], headers=user("alice"))
    assert got.status == 200
    order = await got.json()
    assert set(order) == {"order_id", "sale_id", "user_id", "quantity", "status", "created_at"}
    assert order["order_id"] == bought["order_id"]
    assert order["sale_id"] == "s1"
    assert order["user_id"] == "alice"
    assert order["quantity"] == 2
    assert order["status"] in ("queued", "confirmed")
    assert RFC3339_UTC.match(order["created_at"]), order["created_at"]
    created = datetime.fromisoformat(order["created_at"])
    assert before - timedelta(seconds=5) <= created <= datetime.now(UTC) + timedelta(seconds=5)


async def test_order_goes_from_queued_to_confirmed(client: TestClient) -> None:
    await create_sale(client, "s1", stock=10)
    _, bought, _ = await buy(client, "s1", "alice")
    order = await wait_confirmed(client, bought["order_id"], "alice")
    assert order["order_id"] == bought["order_id"] and order["quantity"] == 1
    view = await admin_view(client, "s1")
    assert view["orders"] == {
        "queued": 0,
        "confirmed": 1,
        "failed": 0,
        "cancelled": 0,
        "undetermined": 0,
        "paid": 0,
        "expired": 0,
    }
    assert view["backlog"] == 0
    assert view["stock_left"] == 9


async def test_order_shows_a_cancel(client: TestClient) -> None:
    await create_sale(client, "s1", stock=10)
    _, bought, _ = await buy(client, "s1", "alice")
    resp = await client.post(f"/admin/v1/orders/{bought['order_id']}/cancel", headers=ADMIN)
    assert resp.status == 200
    got = await client.get(f"/api/v1/orders/{bought['order_id']}", headers=user("alice"))
    assert (await got.json())["status"] == "cancelled"


async def test_another_user_gets_order_not_found(client: TestClient) -> None:
    await create_sale(client, "s1", stock=10)
    _, bought, _ = await buy(client, "s1", "alice")
    got = await client.get(f"/api/v1/orders/{bought['order_id']}", headers=user("mallory"))
    assert_error(got.status, await got.json(), 404, "order_not_found")


async def test_order_needs_identity(client: TestClient) -> None:
    await create_sale(client, "s1", stock=10)
    _, bought, _ = await buy(client, "s1", "alice")
    got = await client.get(f"/api/v1/orders/{bought['order_id']}")
    assert_error(got.status, await got.json(), 401, "unauthenticated")


async def test_unknown_order_is_not_found(client: TestClient) -> None:
    await create_sale(client, "s1", stock=10)
    for order_id in ("s1.AAAAAAAAAAAAAAAA", "nosuch.abcdefgh_-123456"):
        got = await client.get(f"/api/v1/orders/{order_id}", headers=user("alice"))
        assert_error(got.status, await got.json(), 404, "order_not_found")


async def test_malformed_order_id_is_invalid(client: TestClient) -> None:
    for order_id in (
        "nodot",
        "s1.short",
        "s1.AAAAAAAAAAAAAAAAA",  # 17 characters after the dot
        "s1.AAAAAAAA%20AAAAAAA",
        ".AAAAAAAAAAAAAAAA",
        "-s1.AAAAAAAAAAAAAAAA",
        "s" * 65 + ".AAAAAAAAAAAAAAAA",
    ):
        got = await client.get(f"/api/v1/orders/{order_id}", headers=user("alice"))
        assert_error(got.status, await got.json(), 400, "invalid_request")


# --- GET /api/v1/sales/{sale_id} -------------------------------------------------------------


async def test_public_view_fields(client: TestClient) -> None:
    await create_sale(
        client,
        "s1",
        name="Red shoes",
        stock=7,
        per_user_limit=2,
        starts_at="2020-01-01T00:00:00Z",
        ends_at="2999-01-01T00:00:00+01:00",
    )
    resp = await client.get("/api/v1/sales/s1")
    assert resp.status == 200
    view = await resp.json()
    assert view == {
        "sale_id": "s1",
        "name": "Red shoes",
        "status": "active",
        "stock_total": 7,
        "stock_left": 7,
        "starts_at": "2020-01-01T00:00:00Z",
        "ends_at": "2998-12-31T23:00:00Z",
        "per_user_limit": 2,
    }


async def test_public_view_needs_no_identity_and_hides_admin_fields(client: TestClient) -> None:
    await create_sale(client, "s1", stock=3)
    resp = await client.get("/api/v1/sales/s1")
    view = await resp.json()
    assert set(view) == PUBLIC_FIELDS
    assert view["ends_at"] is None
    assert RFC3339_UTC.match(view["starts_at"])


async def test_public_view_statuses(client: TestClient) -> None:
    await create_sale(client, "up", stock=5, starts_at=at(3600))
    await create_sale(client, "on", stock=5)
    await create_sale(client, "gone", stock=0)
    await create_sale(client, "over", stock=5, starts_at=at(-7200), ends_at=at(-3600))
    await create_sale(client, "over0", stock=0, starts_at=at(-7200), ends_at=at(-3600))
    await create_sale(client, "later0", stock=0, starts_at=at(3600))
    statuses = {}
    for sale_id in ("up", "on", "gone", "over", "over0", "later0"):
        resp = await client.get(f"/api/v1/sales/{sale_id}")
        assert resp.status == 200
        statuses[sale_id] = (await resp.json())["status"]
    assert statuses == {
        "up": "upcoming",
        "on": "active",
        "gone": "sold_out",
        "over": "ended",
        "over0": "ended",
        "later0": "upcoming",
    }


async def test_public_view_after_selling_out(client: TestClient) -> None:
    await create_sale(client, "s1", stock=1)
    assert (await buy(client, "s1", "alice"))[0] == 202
    view = await (await client.get("/api/v1/sales/s1")).json()
    assert view["status"] == "sold_out" and view["stock_left"] == 0


async def test_public_view_follows_admin_updates(client: TestClient) -> None:
    await create_sale(client, "s1", stock=0)
    assert (await (await client.get("/api/v1/sales/s1")).json())["status"] == "sold_out"
    resp = await client.put("/admin/v1/sales/s1", json={"stock": 4, "name": "New"}, headers=ADMIN)
    assert resp.status == 200
    view = await (await client.get("/api/v1/sales/s1")).json()
    assert (view["status"], view["stock_left"], view["name"]) == ("active", 4, "New")


async def test_public_view_of_unknown_sale(client: TestClient) -> None:
    resp = await client.get("/api/v1/sales/nosuch")
    assert_error(resp.status, await resp.json(), 404, "sale_not_found")
    # A sale created right after is visible at once (a cached miss is dropped).
    await create_sale(client, "nosuch", stock=1)
    resp = await client.get("/api/v1/sales/nosuch")
    assert resp.status == 200
