"""Faults in cluster mode, under a crowd of buyers through one gateway: a
SCRIPT FLUSH on one primary, a slot migrated mid-load (MOVED, ASK, TRYAGAIN),
a primary killed and restarted. Every time: exactly the stock sold, nobody
over the per-user limit, no buy admitted twice."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from seckill.http.state import RUNTIME
from seckill.redis import keys
from seckill.redis.client import RedisClients
from tests.helpers.api import ADMIN, create_sale
from tests.helpers.cluster import LocalCluster, slot_of
from tests.helpers.gateway import until

pytestmark = [pytest.mark.cluster, pytest.mark.fault]

Answer = tuple[str, str, int, dict[str, Any]]


async def buy(client: TestClient, sale_id: str, user: str) -> Answer:  # type: ignore[type-arg]
    resp = await client.post(f"/api/v1/sales/{sale_id}/orders", headers={"X-User-Id": user})
    return sale_id, user, resp.status, await resp.json()


async def crowd(
    client: TestClient,  # type: ignore[type-arg]
    buys: Iterable[tuple[str, str]],
    *,
    fault: Callable[[], Any] | None = None,
    after: int = 0,
    then: int | None = None,
    concurrency: int = 100,
    marks: list[int] | None = None,
) -> list[Answer]:
    """The buys, *concurrency* at a time; *fault* (run in a thread) starts
    once *after* answers are in, and the crowd goes on meanwhile — with *then*,
    until the fault is over and *then* more answers are in (*buys* may be
    endless). *marks* gets the number of answers in when the fault starts and
    when it is over."""
    answers: list[Answer] = []
    todo = iter(buys)
    started, over = asyncio.Event(), asyncio.Event()
    stop_at: list[int] = []
    if after == 0:
        started.set()

    async def buyer() -> None:
        for sale_id, user in todo:
            answers.append(await buy(client, sale_id, user))
            if len(answers) >= after:
                started.set()
            if then is not None and over.is_set():
                if not stop_at:
                    stop_at.append(len(answers) + then)
                if len(answers) >= stop_at[0]:
                    return

    async def faulty() -> None:
        await started.wait()
        if marks is not None:
            marks.append(len(answers))
        if fault is not None:
            await asyncio.to_thread(fault)
        if marks is not None:
            marks.append(len(answers))
        over.set()

    await asyncio.gather(faulty(), *(buyer() for _ in range(concurrency)))
    return answers


async def assert_exact(
    redis: Any, answers: list[Answer], sale_id: str, stock: int, limit: int
) -> None:
    """202s == units held == stock sold == orders in the stream; nobody over the limit."""
    admitted = [a for a in answers if a[0] == sale_id and a[2] == 202]
    sale = await redis.hgetall(keys.sale(sale_id))
    held = {u: int(n) for u, n in (await redis.hgetall(keys.units(sale_id))).items()}
    sold = int(sale["stock_total"]) - int(sale["stock_left"])
    assert len(admitted) == sum(held.values()) == sold, (sale_id, len(admitted), held, sale)
    assert len({a[3]["order_id"] for a in admitted}) == len(admitted)
    # every 202 is an order (its stream entry is deleted once a worker delivers it)
    for a in admitted:
        assert await redis.exists(keys.order(sale_id, a[3]["order_id"])), a
    assert all(n <= limit for n in held.values()), held
    per_user = Counter(a[1] for a in admitted)
    assert per_user == Counter({u: n for u, n in held.items()}), (per_user, held)
    assert sold <= stock


async def test_script_flush_on_one_primary_mid_run(
    cluster_client: TestClient,  # type: ignore[type-arg]
    cluster_clients: RedisClients,
    local_cluster: LocalCluster,
    sales: list[str],
) -> None:
    """The scripts are loaded again on that primary; every buy is answered 202
    or 409, none 503, and the counts are exact."""
    for sale_id in sales:
        await create_sale(cluster_client, sale_id, stock=100, per_user_limit=1)
    buys = [(sale_id, f"u{i}") for i in range(150) for sale_id in sales]

    def flush() -> None:
        with local_cluster.nodes[1].client() as c:
            c.script_flush()

    answers = await crowd(cluster_client, buys, fault=flush, after=120)
    assert {a[2] for a in answers} <= {202, 409}, Counter(a[2] for a in answers)
    for sale_id in sales:
        await assert_exact(cluster_clients.redis, answers, sale_id, 100, 1)
        assert sum(1 for a in answers if a[0] == sale_id and a[2] == 202) == 100


async def test_a_slot_migrated_mid_load_admits_nobody_twice(
    cluster_client: TestClient,  # type: ignore[type-arg]
    cluster_clients: RedisClients,
    local_cluster: LocalCluster,
    sales: list[str],
) -> None:
    """The sale's slot moves from node 0 to node 1 while buys (each user
    twice, a limit of 1) keep arriving: MOVED/ASK/TRYAGAIN are followed, the
    buys answered during the move are 202, 409 or 503 (not run), and
    admitted == stock sold == units held, nobody over the limit."""
    sale_id = sales[0]
    slot = slot_of(keys.sale(sale_id))
    await create_sale(cluster_client, sale_id, stock=100_000, per_user_limit=1)
    endless = ((sale_id, f"u{i // 2}") for i in itertools.count())
    moved: list[int] = []
    marks: list[int] = []
    try:
        answers = await crowd(
            cluster_client,
            endless,
            fault=lambda: moved.append(local_cluster.migrate_slot(slot, 1, batch=20)),
            after=200,
            then=300,
            concurrency=50,
            marks=marks,
        )
        assert moved and moved[0] > 50  # the sale's keys and its orders moved
        assert local_cluster.node_of(keys.sale(sale_id)) is local_cluster.nodes[1]
        statuses = Counter(a[2] for a in answers)
        assert set(statuses) <= {202, 409, 503}, statuses
        assert marks[1] > marks[0], marks  # buys were answered while the slot moved
        assert statuses[202] >= 250
        # the app's own auto-pipeline followed the move
        redirected = cluster_client.app[RUNTIME].clients.pipe.redirected
        assert redirected["MOVED"] > 0, redirected
        await assert_exact(cluster_clients.redis, answers, sale_id, 100_000, 1)
    finally:
        local_cluster.ensure_running()  # the slot back to node 0


async def test_a_killed_primary_fails_fast_and_the_others_keep_selling(
    cluster_client: TestClient,  # type: ignore[type-arg]
    cluster_clients: RedisClients,
    local_cluster: LocalCluster,
    sales: list[str],
) -> None:
    for sale_id in sales:
        await create_sale(cluster_client, sale_id, stock=60, per_user_limit=1)
    first = await crowd(cluster_client, [(s, f"a{i}") for i in range(20) for s in sales])
    assert {a[2] for a in first} == {202}
    local_cluster.kill(2)  # SIGKILL; no buy in flight
    try:
        started = time.monotonic()
        during = await crowd(cluster_client, [(s, f"b{i}") for i in range(20) for s in sales])
        took = time.monotonic() - started
        dead = [a for a in during if a[0] == sales[2]]
        assert {a[2] for a in dead} == {503}, Counter(a[2] for a in dead)
        assert all(a[3]["error"] in ("unavailable", "outcome_unknown") for a in dead), dead[0]
        assert took < 5, took  # quickly: refused connections, not timeouts
        alive = [a for a in during if a[0] != sales[2]]
        assert {a[2] for a in alive} == {202}, Counter(a[2] for a in alive)

        # the gateway still serves (its other sales): ready, its event listener
        # on a live primary; and an event still goes out
        async def ready() -> bool:
            return (await cluster_client.get("/readyz")).status == 200

        await until(ready, 5, "/readyz 200 with one primary down")
        resp = await cluster_client.put(
            f"/admin/v1/sales/{sales[0]}", json={"name": "renamed"}, headers=ADMIN
        )
        assert resp.status == 200, await resp.text()
    finally:
        local_cluster.restart(2)
    after = await crowd(cluster_client, [(s, f"c{i}") for i in range(40) for s in sales])
    answers = first + during + after
    for sale_id in sales:
        await assert_exact(cluster_clients.redis, answers, sale_id, 60, 1)
        sale = await cluster_clients.redis.hgetall(keys.sale(sale_id))
        assert sale["stock_left"] == "0", (sale_id, sale)
