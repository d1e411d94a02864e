"""Delivery outcomes, end to end: stock goes back only on a definite "not
written"; an unknown outcome is retried, never released, and parked as
undetermined for an operator to settle (docs/API.md §5, §6)."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from seckill.pipeline import consumer
from seckill.pipeline.sinks import CheckableSink, Order, SinkError, sink_from_url
from seckill.process.procs import free_port
from seckill.redis import keys
from seckill.redis.client import RedisClients
from seckill.redis.scripts import Scripts
from seckill.settings import Settings
from seckill.tools.invariants import check_sale
from tests.helpers.api import ADMIN, ADMIN_TOKEN, admin_sale, create_sale, crowd
from tests.helpers.gateway import until
from tests.helpers.webhook import Webhook
from tests.pipeline.conftest import Client, MakeClient


@pytest.fixture(autouse=True)
def quick_rounds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reclaimer passes and round backoffs in tenths of seconds, not seconds."""
    monkeypatch.setattr(consumer, "IDLE_TIMEOUT_MS", 300)
    monkeypatch.setattr(consumer, "RECLAIM_INTERVAL", 0.2)
    monkeypatch.setattr(consumer, "KEEP_INTERVAL", 0.1)
    monkeypatch.setattr(consumer, "ROUND_BACKOFF_BASE", 0.2)


async def counts(client: Client, sale: str) -> dict[str, int]:
    return (await admin_sale(client, sale))["orders"]  # type: ignore[no-any-return]


async def settle(client: Client, order_id: str, body: Any, **kw: Any) -> tuple[int, Any]:
    resp = await client.post(f"/admin/v1/orders/{order_id}/settle", json=body, **kw)
    return resp.status, await resp.json()


async def test_a_slow_webhook_that_stores_the_order_never_gets_it_released(
    make_client: MakeClient, webhook: Webhook, redis: Redis
) -> None:
    """The shop stores each order but answers after the delivery timeout: the
    stock stays held, nobody else buys it, and past the budget the orders are
    undetermined, listed, and settled by the operator."""
    webhook.late = 1.0
    client = await make_client(
        order_sink=webhook.url, delivery_timeout=0.3, delivery_retries=1, undetermined_after=2
    )
    await create_sale(client, "slow", stock=2)
    admitted = await crowd(client, "slow", [f"u{i}" for i in range(6)])
    assert len(admitted) == 2
    ids = sorted(o["order_id"] for o in admitted)

    async def parked() -> bool:
        return (await counts(client, "slow"))["undetermined"] == 2

    await until(parked, 20, "both orders undetermined")
    sale = await admin_sale(client, "slow")
    assert sale["orders"] == {
        "queued": 0,
        "confirmed": 0,
        "failed": 0,
        "cancelled": 0,
        "undetermined": 2,
        "paid": 0,
        "expired": 0,
    }
    assert (sale["stock_left"], sale["backlog"], sale["status"]) == (0, 0, "sold_out")
    assert sorted(webhook.delivered) == ids  # the shop has each once; nothing else
    assert webhook.raw >= 4  # retried over several rounds
    assert await crowd(client, "slow", ["late1", "late2"]) == []  # no unit came back
    scrape = await (await client.get("/metrics")).text()
    assert 'seckill_sale_undetermined{sale="slow"} 2.0' in scrape
    # the entries left the stream: nothing pending, nothing kept
    assert (await redis.xpending(keys.stream("slow"), "seckill"))["pending"] == 0
    assert await redis.xlen(keys.stream("slow")) == 0

    # listed for the operator, and shown to the customer
    for query in ("?status=undetermined", "?status=undetermined&sale_id=slow"):
        resp = await client.get(f"/admin/v1/orders{query}", headers=ADMIN)
        listed = await resp.json()
        assert resp.status == 200
        assert sorted(o["order_id"] for o in listed["orders"]) == ids
        assert listed["truncated"] is False
        assert {o["status"] for o in listed["orders"]} == {"undetermined"}
    owner = next(o for o in listed["orders"] if o["order_id"] == ids[0])["user_id"]
    resp = await client.get(f"/api/v1/orders/{ids[0]}", headers={"X-User-Id": owner})
    assert (await resp.json())["status"] == "undetermined"

    # settle: confirm one (the shop has it), release the other (say it does not)
    assert await settle(client, ids[0], {"outcome": "confirm"}, headers=ADMIN) == (
        200,
        {**(await resp.json()), "status": "confirmed"},
    )
    status, body = await settle(client, ids[1], {"outcome": "release"}, headers=ADMIN)
    assert (status, body["status"]) == (200, "failed")
    sale = await admin_sale(client, "slow")
    assert sale["orders"]["confirmed"] == 1 and sale["orders"]["failed"] == 1
    assert (sale["stock_left"], sale["orders"]["undetermined"]) == (1, 0)
    resp = await client.get("/admin/v1/orders?status=undetermined", headers=ADMIN)
    assert (await resp.json())["orders"] == []
    # settled already: 409; the cancel route says to settle instead (tested below)
    status, body = await settle(client, ids[0], {"outcome": "release"}, headers=ADMIN)
    assert (status, body["error"]) == (409, "order_not_undetermined")
    assert "confirmed, not undetermined" in body["message"]
    checks = await check_sale(redis, "slow")
    assert all(c.ok for c in checks), [c.line() for c in checks]


@pytest.mark.parametrize(
    ("order_id", "body", "headers", "status", "code"),
    [
        ("bs.AAAAAAAAAAAAAAAA", {"outcome": "confirm"}, ADMIN, 404, "order_not_found"),
        ("nodot", {"outcome": "confirm"}, ADMIN, 400, "invalid_request"),
        ("bs.AAAAAAAAAAAAAAAA", {"outcome": "maybe"}, ADMIN, 400, "invalid_request"),
        ("bs.AAAAAAAAAAAAAAAA", {}, ADMIN, 400, "invalid_request"),
        ("bs.AAAAAAAAAAAAAAAA", ["confirm"], ADMIN, 400, "invalid_request"),
        ("bs.AAAAAAAAAAAAAAAA", {"outcome": "confirm", "x": 1}, ADMIN, 400, "invalid_request"),
        ("bs.AAAAAAAAAAAAAAAA", None, ADMIN, 400, "invalid_request"),
        ("bs.AAAAAAAAAAAAAAAA", {"outcome": "confirm"}, {}, 401, "unauthenticated"),
    ],
)
async def test_settle_bad_inputs(
    client: Client, order_id: str, body: Any, headers: dict[str, str], status: int, code: str
) -> None:
    answer = await settle(client, order_id, body, headers=headers)
    assert (answer[0], answer[1]["error"]) == (status, code), answer


async def test_settling_a_queued_order_is_409_and_an_undetermined_one_is_not_cancellable(
    client: Client, redis: Redis
) -> None:
    await create_sale(client, "st", stock=3)
    [order] = await crowd(client, "st", ["a"])
    oid = order["order_id"]
    # a queued (or confirmed) order is not settled: 409, nothing changes
    await until(
        lambda: redis.hget(keys.order("st", oid), "status"), 10, "the order hash"
    )  # exists at once
    status_before = await redis.hget(keys.order("st", oid), "status")
    status, body = await settle(client, oid, {"outcome": "release"}, headers=ADMIN)
    assert (status, body["error"]) == (409, "order_not_undetermined")
    assert f"{status_before}, not undetermined" in body["message"]
    # park it by hand, as the pipeline would: then cancel says to settle
    await redis.hset(keys.order("st", oid), "status", "undetermined")
    resp = await client.post(f"/admin/v1/orders/{oid}/cancel", headers=ADMIN)
    body = await resp.json()
    assert (resp.status, body["error"]) == (409, "order_not_cancellable")
    assert "settle it" in body["message"]


@pytest.mark.parametrize(
    "query",
    ["", "?status=queued", "?status=undetermined&sale_id=bad%20id", "?status=UNDETERMINED"],
)
async def test_listing_orders_bad_queries(client: Client, query: str) -> None:
    resp = await client.get(f"/admin/v1/orders{query}", headers=ADMIN)
    assert (resp.status, (await resp.json())["error"]) == (400, "invalid_request")
    resp = await client.get("/admin/v1/orders?status=undetermined")
    assert resp.status == 401


@pytest.mark.parametrize("status", [500, 503, 408, 429])
async def test_unknown_answers_are_retried_and_never_released(
    make_client: MakeClient, webhook: Webhook, status: int
) -> None:
    webhook.fail, webhook.fail_status = True, status
    client = await make_client(
        order_sink=webhook.url, delivery_timeout=0.5, delivery_retries=1, undetermined_after=60
    )
    await create_sale(client, "unk", stock=2)
    admitted = await crowd(client, "unk", ["a", "b", "c"])
    assert len(admitted) == 2
    # both rounds of tries and later rounds (deferred, then re-claimed)
    await until(lambda: webhook.raw >= 8, 20, "several rounds of retries")
    sale = await admin_sale(client, "unk")
    assert sale["orders"]["failed"] == 0 and sale["stock_left"] == 0
    assert sale["orders"]["queued"] == 2
    webhook.fail = False  # the shop recovers: each order is confirmed once

    async def confirmed() -> bool:
        return (await counts(client, "unk"))["confirmed"] == 2

    await until(confirmed, 20, "both orders confirmed")
    assert webhook.delivered == {o["order_id"] for o in admitted}


async def test_a_refusal_after_an_unknown_try_parks_instead_of_releasing(
    make_client: MakeClient, webhook: Webhook
) -> None:
    """A timeout may have stored it; a later 400 does not prove otherwise."""
    webhook.late = 1.0
    client = await make_client(
        order_sink=webhook.url, delivery_timeout=0.3, delivery_retries=0, undetermined_after=60
    )
    await create_sale(client, "mix", stock=1)
    [order] = await crowd(client, "mix", ["a"])
    await until(lambda: webhook.raw >= 1, 10, "the first (late) delivery")
    webhook.late, webhook.fail, webhook.fail_status = 0.0, True, 400

    async def parked() -> bool:
        return (await counts(client, "mix"))["undetermined"] == 1

    await until(parked, 20, "the order parked")
    sale = await admin_sale(client, "mix")
    assert (sale["stock_left"], sale["orders"]["failed"]) == (0, 0)
    assert webhook.delivered == {order["order_id"]}


async def test_connection_refused_is_definite_and_releases_after_the_budget(
    make_client: MakeClient,
) -> None:
    client = await make_client(
        order_sink=f"http://127.0.0.1:{free_port()}/orders",
        delivery_timeout=0.5,
        delivery_retries=2,
    )
    await create_sale(client, "ref", stock=2)
    assert len(await crowd(client, "ref", ["a", "b"])) == 2

    async def failed() -> bool:
        return (await counts(client, "ref"))["failed"] == 2

    await until(failed, 20, "both orders failed (nothing was ever sent)")
    assert (await admin_sale(client, "ref"))["stock_left"] == 2


@pytest.mark.fault
async def test_sqlite_locked_by_another_writer_does_not_oversell(
    make_client: MakeClient, settings: Settings, redis: Redis
) -> None:
    """Another writer holds the lock longer than the delivery timeout while a
    crowd buys and buys again: the sink ends with no more units than sold."""
    db_path = Path(settings.data_dir) / "orders.db"
    client = await make_client(delivery_timeout=0.4, delivery_retries=1, undetermined_after=60)
    await create_sale(client, "lock", stock=5)
    other = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holding the write lock
        admitted = await crowd(client, "lock", [f"u{i}" for i in range(20)])
        assert len(admitted) == 5

        async def some_released() -> bool:
            return (await counts(client, "lock"))["failed"] >= 1

        await until(some_released, 20, "locked writes failing definitely")
        # released units are sold again while the lock is still held (once the
        # sold-out flag of this process is cleared by the release's event)
        again: list[dict[str, Any]] = []
        tries = iter(range(1000))

        async def bought_again() -> bool:
            n = next(tries)
            again.extend(await crowd(client, "lock", [f"v{n}-{i}" for i in range(5)]))
            return bool(again)

        await until(bought_again, 10, "a released unit bought again")
    finally:
        other.execute("ROLLBACK")
        other.close()
    more = await crowd(client, "lock", [f"w{i}" for i in range(20)])

    async def drained() -> bool:
        c = await counts(client, "lock")
        return c["queued"] == 0

    await until(drained, 30, "every order delivered or released")
    sale = await admin_sale(client, "lock")
    assert sale["stock_left"] + sale["orders"]["confirmed"] == 5, sale
    assert len(admitted) + len(again) + len(more) >= 6
    checks = {c.name: c for c in await check_sale(redis, "lock", sink_url=f"sqlite:///{db_path}")}
    assert all(c.ok for c in checks.values()), [c.line() for c in checks.values()]
    assert checks["sink_within_sold"].ok


async def test_a_crowd_against_a_slow_sink_sells_exactly_the_stock(
    make_client: MakeClient, webhook: Webhook, redis: Redis
) -> None:
    """Hundreds of concurrent buyers, a shop that stores every order but
    answers late at first: the sale sells out exactly, nothing is released,
    and the shop ends with exactly one order per unit."""
    stock = 40
    webhook.late = 0.5
    client = await make_client(
        order_sink=webhook.url, delivery_timeout=0.25, delivery_retries=1, undetermined_after=60
    )
    await create_sale(client, "crowd", stock=stock)
    admitted = await crowd(client, "crowd", [f"u{i}" for i in range(300)])
    assert len(admitted) == stock
    await until(lambda: len(webhook.delivered) == stock, 30, "every order reached the shop")
    # a second crowd while the outcomes are unknown: nothing came back to sell
    assert await crowd(client, "crowd", [f"v{i}" for i in range(100)]) == []
    webhook.late = 0.0

    async def all_confirmed() -> bool:
        return (await counts(client, "crowd"))["confirmed"] == stock

    await until(all_confirmed, 30, "every order confirmed")
    sale = await admin_sale(client, "crowd")
    assert (sale["stock_left"], sale["orders"]["failed"]) == (0, 0)
    assert webhook.delivered == {o["order_id"] for o in admitted}
    units = sum(b["quantity"] for b in webhook.bodies.values())
    assert units == stock
    checks = await check_sale(redis, "crowd", require_drained=True)
    assert all(c.ok for c in checks), [c.line() for c in checks]


async def test_final_orders_expire_after_the_retention_then_404(
    make_client: MakeClient, redis: Redis
) -> None:
    client = await make_client(order_retention=1, idempotency_ttl=1)
    await create_sale(client, "ret", stock=2)
    [order] = await crowd(client, "ret", ["a"])
    oid = order["order_id"]

    async def confirmed() -> bool:
        return (await counts(client, "ret"))["confirmed"] == 1

    await until(confirmed, 10, "the order confirmed")
    resp = await client.get(f"/api/v1/orders/{oid}", headers={"X-User-Id": "a"})
    assert (await resp.json())["status"] == "confirmed"

    async def gone() -> bool:
        resp = await client.get(f"/api/v1/orders/{oid}", headers={"X-User-Id": "a"})
        return resp.status == 404 and (await resp.json())["error"] == "order_not_found"

    await until(gone, 10, "the order hash expired")
    # the sale's counters and stock are untouched by the expiry
    sale = await admin_sale(client, "ret")
    assert (sale["stock_left"], sale["orders"]["confirmed"]) == (1, 1)
    assert await redis.xlen(keys.stream("ret")) == 0
    assert (await redis.xpending(keys.stream("ret"), "seckill"))["pending"] == 0


async def seckill_cli(*args: str) -> tuple[int, str, str]:
    """``python -m seckill ARGS`` in a child process (the loop keeps serving)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "seckill",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "SECKILL_ADMIN_TOKEN": ADMIN_TOKEN},
    )
    try:
        async with asyncio.timeout(60):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def parked_orders(redis: Redis, scripts: Scripts, sale: str, users: list[str]) -> list[str]:
    """Orders of *users* in *sale*, parked as undetermined the way the pipeline does."""
    await scripts.sale_put(sale, {"stock": 5})
    ids = [(await scripts.admit(sale, u, 1)).order_id for u in users]
    await redis.xgroup_create(keys.stream(sale), consumer.GROUP, id="0")
    [[_, entries]] = await redis.xreadgroup(consumer.GROUP, "gone", {keys.stream(sale): ">"})
    for entry_id, fields in entries:
        assert await scripts.park(sale, fields["order_id"], consumer.GROUP, entry_id)
    await redis.sadd(keys.SALES_INDEX, sale)  # listed by "every sale" too
    return sorted(ids)


async def test_cli_lists_and_settles_undetermined_orders(
    client: Client, redis: Redis, scripts: Scripts
) -> None:
    url = str(client.make_url("")).rstrip("/")
    a, b = await parked_orders(redis, scripts, "cli", ["alice", "bob"])
    code, out, err = await seckill_cli("order", "undetermined", "--url", url)
    assert (code, err) == (0, "")
    assert [line.split()[:2] for line in out.splitlines()] == [
        [a, "undetermined"],
        [b, "undetermined"],
    ]
    code, out, _ = await seckill_cli(
        "order", "undetermined", "--sale", "cli", "--url", url, "--json"
    )
    assert code == 0 and [o["order_id"] for o in json.loads(out)["orders"]] == [a, b]

    code, out, err = await seckill_cli("order", "settle", a, "--confirm", "--url", url)
    assert (code, err) == (0, ""), err
    assert out.startswith("confirmed\n") and f"{a}  confirmed" in out
    code, out, err = await seckill_cli("order", "settle", b, "--release", "--url", url)
    assert (code, err) == (0, ""), err
    assert out.startswith("released")
    assert (await redis.hget(keys.sale("cli"), "stock_left")) == "4"
    code, out, _ = await seckill_cli("order", "undetermined", "--url", url)
    assert (code, out) == (0, "no undetermined orders\n")

    bad = [
        (["settle", a, "--release"], 1, "order_not_undetermined"),
        (["settle", "cli.AAAAAAAAAAAAAAAA", "--confirm"], 1, "order_not_found"),
        (["settle", "nodot", "--confirm"], 2, "not an order id"),
        (["settle", a], 2, "exactly one of --confirm or --release"),
        (["settle", a, "--confirm", "--release"], 2, "exactly one of --confirm or --release"),
        (["undetermined", "--sale", "bad id"], 2, "not a valid sale id"),
        (["settle", a, "--confirm", "--token", "wrong-token-123456789"], 2, "unauthenticated"),
    ]
    results = await asyncio.gather(
        *(seckill_cli("order", *args, "--url", url) for args, _, _ in bad)
    )
    for (args, want, fragment), (code, _, err) in zip(bad, results, strict=True):
        lines = err.strip().splitlines()
        assert code == want and len(lines) == 1 and fragment in lines[0], (args, code, err)
        assert lines[0].startswith("seckill: error: ")


async def test_orders_in_doubt_survive_a_restart_and_are_delivered_after(
    make_client: MakeClient, webhook: Webhook, redis: Redis
) -> None:
    """An order whose outcome is unknown waits in the stream, not in the
    process: a new gateway process picks it up and delivers it."""
    webhook.fail = True
    options = {
        "order_sink": webhook.url,
        "delivery_timeout": 0.5,
        "delivery_retries": 0,
        "undetermined_after": 60,
    }
    client = await make_client(**options)
    await create_sale(client, "rs", stock=3)
    admitted = await crowd(client, "rs", ["a", "b", "c"])

    async def all_deferred() -> bool:
        rounds = [await redis.hget(keys.order("rs", o["order_id"]), "rounds") for o in admitted]
        return all(r is not None for r in rounds)

    await until(all_deferred, 20, "every order's outcome unknown and deferred")
    await client.close()  # the gateway process stops with the orders in doubt
    assert (await redis.xpending(keys.stream("rs"), "seckill"))["pending"] == 3
    webhook.fail = False
    client = await make_client(**options)

    async def confirmed() -> bool:
        return (await counts(client, "rs"))["confirmed"] == 3

    await until(confirmed, 20, "the orders delivered after the restart")
    assert webhook.delivered == {o["order_id"] for o in admitted}
    assert await redis.xlen(keys.stream("rs")) == 0
    assert (await redis.xpending(keys.stream("rs"), "seckill"))["pending"] == 0


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--undetermined-after", "0"], "--undetermined-after must be 1..2592000"),
        (["--undetermined-after", "soon"], "--undetermined-after"),
        (["--order-retention", "60"], "--order-retention must be 86400..31622400"),
        (["--order-retention", "-1"], "--order-retention"),
    ],
)
async def test_serve_refuses_bad_outcome_and_retention_flags(
    args: list[str], fragment: str
) -> None:
    code, out, err = await seckill_cli("serve", "--port", str(free_port()), *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, (code, out, err)
    assert lines[0].startswith("seckill: error: ") and fragment in lines[0], lines[0]


def test_settings_defaults_for_outcomes_and_retention() -> None:
    settings = Settings()
    assert (settings.undetermined_after, settings.order_retention) == (3600.0, 7 * 86_400)
    options = settings.validated().pipeline_options()
    assert (options.undetermined_after, options.order_retention) == (3600.0, 7 * 86_400)


class LookingSink:
    """A sink whose writes always fail definitely and that answers lookups
    from *held* (the rows an earlier holder wrote); ``lookup_fails`` makes
    the lookup itself fail."""

    def __init__(self, held: set[str]) -> None:
        self.held = held
        self.lookup_fails = False
        self.lookups: list[str] = []

    async def start(self) -> None:
        return None

    async def deliver(self, order: Order) -> None:
        raise SinkError("connection refused", definite=True)

    async def contains(self, order_id: str) -> bool:
        self.lookups.append(order_id)
        if self.lookup_fails:
            raise SinkError("lookup failed")
        return order_id in self.held

    async def close(self) -> None:
        return None


async def test_a_database_sink_is_asked_before_a_release(
    clients: RedisClients, scripts: Scripts, settings: Settings
) -> None:
    """Every try failed definitely: the row an earlier holder wrote is found
    (confirmed), a missing one releases, a failed lookup keeps the stock."""
    redis = clients.redis
    await scripts.sale_put("look", {"stock": 5})
    ids = [(await scripts.admit("look", u, 1)).order_id for u in ("a", "b", "c")]
    sink = LookingSink({ids[0]})
    assert isinstance(sink, CheckableSink)
    options = settings.replace(delivery_retries=0, delivery_timeout=0.5).pipeline_options()

    async def released(sale_id: str) -> None:
        return None

    pipeline = consumer.Pipeline(clients, scripts, sink, options, "looker", released)
    await redis.sadd(keys.SALES_INDEX, "look")
    await pipeline.start()
    try:

        async def status(order_id: str) -> str | None:
            return await redis.hget(keys.order("look", order_id), "status")  # type: ignore[no-any-return]

        await until(
            lambda: _statuses(redis, ids, ["confirmed", "failed", "failed"]), 10, "a, b, c settled"
        )
        assert sorted(sink.lookups) == sorted(ids)
        sink.lookup_fails = True
        ids.append((await scripts.admit("look", "d", 1)).order_id)
        await until(lambda: redis.hget(keys.order("look", ids[3]), "rounds"), 10, "d deferred")
        assert await status(ids[3]) == "queued"
    finally:
        await pipeline.stop()
    sale = await redis.hgetall(keys.sale("look"))
    # a confirmed (holds its unit), b and c released, d still holding its unit
    assert (sale["stock_left"], sale["n_confirmed"], sale["n_failed"]) == ("3", "1", "2")


async def _statuses(redis: Redis, order_ids: list[str], want: list[str]) -> bool:
    got = [await redis.hget(keys.order("look", i), "status") for i in order_ids]
    return got == want


async def test_a_try_started_by_a_process_that_died_is_never_released(
    clients: RedisClients, scripts: Scripts, settings: Settings
) -> None:
    """A dead process had sent one order (its try was counted) and not the
    other. The sink is now unreachable (a definite failure): the untried order
    is released, the tried one keeps its unit — the sink may have it."""
    redis = clients.redis
    await scripts.sale_put("died", {"stock": 5})
    tried = (await scripts.admit("died", "a", 1)).order_id
    untried = (await scripts.admit("died", "b", 1)).order_id
    await redis.xgroup_create(keys.stream("died"), consumer.GROUP, id="0")
    await redis.xreadgroup(consumer.GROUP, "dead", {keys.stream("died"): ">"})
    start = await scripts.begin("died", tried, now_ms=0)
    assert (start.status, start.attempts_before, start.due) == ("queued", 0, True)
    await redis.sadd(keys.SALES_INDEX, "died")
    sink = sink_from_url(f"http://127.0.0.1:{free_port()}/orders", timeout=0.5)
    options = settings.replace(delivery_retries=0, delivery_timeout=0.5).pipeline_options()

    async def released(sale_id: str) -> None:
        return None

    pipeline = consumer.Pipeline(clients, scripts, sink, options, "heir", released)
    await pipeline.start()
    try:
        await until(lambda: bool(pipeline.sales), 5, "the sale discovered")
        assert await pipeline.reclaim(idle_ms=0) == 2

        async def untried_released() -> bool:
            return await redis.hget(keys.order("died", untried), "status") == "failed"

        await until(untried_released, 10, "the untried order released")

        async def deferred() -> bool:
            return await redis.hget(keys.order("died", tried), "unknown_since") is not None

        await until(deferred, 10, "the tried order deferred")
    finally:
        await pipeline.stop()
    assert await redis.hget(keys.order("died", tried), "status") == "queued"
    sale = await redis.hgetall(keys.sale("died"))
    assert (sale["stock_left"], sale["n_failed"], sale["n_queued"]) == ("4", "1", "1")
