"""One hot sale on several shards (issue 13) on a real local cluster: the
buckets of a sale land on every primary, and a crowd buys exactly the stock."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from seckill.redis import keys
from seckill.redis.client import RedisClients
from seckill.redis.scripts import bucket_of_order
from seckill.tools.invariants import check_sale, read_summed
from tests.helpers.api import ADMIN, admin_sale, create_sale
from tests.helpers.cli import run_module
from tests.helpers.cluster import LocalCluster

pytestmark = pytest.mark.cluster


async def buy_all(
    client: TestClient,  # type: ignore[type-arg]
    sale: str,
    users: list[str],
) -> list[tuple[int, dict[str, Any]]]:
    async def buy(user: str) -> tuple[int, dict[str, Any]]:
        resp = await client.post(f"/api/v1/sales/{sale}/orders", headers={"X-User-Id": user})
        return resp.status, await resp.json()

    answers: list[tuple[int, dict[str, Any]]] = []
    for i in range(0, len(users), 500):
        answers += await asyncio.gather(*(buy(u) for u in users[i : i + 500]))
    return answers


async def at_rest(redis: Any, sale: str, within: float = 60.0) -> bool:
    """Wait until the sale is at rest: True once every order is delivered;
    False when its counters stopped moving with orders still queued (no
    pipeline delivers in cluster mode on this branch)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last, since = None, loop.time()
    while loop.time() < deadline:
        sale_hash = await read_summed(redis, sale)
        if int(sale_hash["n_queued"]) == 0:
            return True
        now = (sale_hash["n_queued"], sale_hash["n_confirmed"])
        if now != last:
            last, since = now, loop.time()
        elif loop.time() - since > 3.0:
            return False
        await asyncio.sleep(0.1)
    raise AssertionError(f"sale {sale} still moving after {within} s")


async def test_buckets_land_on_every_primary(
    cluster_client: TestClient,  # type: ignore[type-arg]
    cluster_clients: RedisClients,
    local_cluster: LocalCluster,
) -> None:
    view = await create_sale(cluster_client, "hot", stock=90, buckets=3)
    assert view["buckets"] == 3 and view["stock_left"] == 90
    tags = (await cluster_clients.redis.hget(keys.sale("hot"), "tags")).split()  # type: ignore[misc, union-attr]
    assert len(tags) == 3
    nodes = [local_cluster.node_of(keys.sale(tag)) for tag in tags]
    assert {n.index for n in nodes} == {0, 1, 2}
    # each bucket's hash is on its node, and only there
    for tag, node in zip(tags, nodes, strict=True):
        with node.client() as c:
            assert c.hget(keys.sale(tag), "sale_id") == "hot"
    # a buy of each bucket: orders on three primaries
    users = [f"u{i}" for i in range(30)]
    answers = await buy_all(cluster_client, "hot", users)
    assert Counter(s for s, _ in answers) == {202: 30}
    assert {bucket_of_order(b["order_id"]) for _, b in answers} == {0, 1, 2}
    for user, (_, body) in zip(users, answers, strict=True):
        resp = await cluster_client.get(
            f"/api/v1/orders/{body['order_id']}", headers={"X-User-Id": user}
        )
        assert resp.status == 200 and (await resp.json())["sale_id"] == "hot"
    resp = await cluster_client.post(
        f"/admin/v1/orders/{answers[0][1]['order_id']}/cancel", headers=ADMIN
    )
    assert resp.status == 200
    assert (await admin_sale(cluster_client, "hot"))["stock_left"] == 61


async def test_a_crowd_of_5000_buys_exactly_1000_in_3_buckets(
    cluster_client: TestClient,  # type: ignore[type-arg]
    cluster_clients: RedisClients,
) -> None:
    await create_sale(cluster_client, "crowd", stock=1000, buckets=3, per_user_limit=1)
    answers = await buy_all(cluster_client, "crowd", [f"buyer{i}" for i in range(5000)])
    assert Counter(s for s, _ in answers) == {202: 1000, 409: 4000}
    assert {b["error"] for s, b in answers if s == 409} == {"sold_out"}
    sale = await admin_sale(cluster_client, "crowd")
    assert sale["stock_left"] == 0 and sum(sale["orders"].values()) == 1000
    # the checks read a sale at rest: delivered (when the pipeline delivers
    # in cluster mode), or still queued once nothing moves any more
    drained = await at_rest(cluster_clients.redis, "crowd")
    checks = await check_sale(cluster_clients.redis, "crowd", require_drained=drained)
    assert all(c.ok for c in checks), [c.line() for c in checks]


async def test_the_checker_reads_a_sale_with_buckets_on_a_cluster(
    cluster_client: TestClient,  # type: ignore[type-arg]
    cluster_clients: RedisClients,
    cluster_url: str,
) -> None:
    await create_sale(cluster_client, "chk", stock=50, buckets=3, per_user_limit=1)
    answers = await buy_all(cluster_client, "chk", [f"c{i}" for i in range(80)])
    assert Counter(s for s, _ in answers) == {202: 50, 409: 30}
    await at_rest(cluster_clients.redis, "chk")
    result = await asyncio.to_thread(
        run_module, "loadtest.check", "--redis-url", cluster_url, "--sale", "chk"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS buckets_conserve: pool 0 + buckets 0+0+0 + in flight 0 = 0" in result.stdout


async def test_a_transfer_cut_after_its_first_step_is_repaired_across_primaries(
    cluster_client: TestClient,  # type: ignore[type-arg]
    cluster_clients: RedisClients,
) -> None:
    from seckill.redis.scripts import Scripts
    from seckill.tools.invariants import check_buckets

    await create_sale(cluster_client, "cut", stock=90, buckets=3, per_user_limit=1)
    scripts = Scripts(cluster_clients)
    tags = await scripts.route("cut")
    assert tags is not None
    # pool (home slot) -> bucket 2 (another primary): step 1 only, then a "crash"
    amount, _, _, _ = await scripts.take("cut", tags[2], 20, xid="cut-1")
    assert amount == 20
    report = await check_buckets(cluster_clients.redis, "cut")
    assert report.ok and report.in_flight == 20 and report.available == 90
    assert await scripts.reconcile("cut") == 1
    report = await check_buckets(cluster_clients.redis, "cut")
    assert report.ok and report.in_flight == 0 and report.outstanding == 0
    answers = await buy_all(cluster_client, "cut", [f"x{i}" for i in range(120)])
    assert Counter(s for s, _ in answers) == {202: 90, 409: 30}
    drained = await at_rest(cluster_clients.redis, "cut")
    checks = await check_sale(cluster_clients.redis, "cut", require_drained=drained)
    assert all(c.ok for c in checks), [c.line() for c in checks]
