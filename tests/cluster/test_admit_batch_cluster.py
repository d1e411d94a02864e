"""Batched admission on a real local cluster (issue 14): the buys of one loop
turn go as one admit.lua call per sale and slot — one per bucket of a sale
with buckets, each on its own primary — and the stock is sold exactly."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from seckill.redis import keys
from seckill.redis.client import RedisClients
from seckill.redis.scripts import Admit, Scripts
from seckill.tools.invariants import read_summed
from tests.helpers.cluster import LocalCluster, slot_of

pytestmark = pytest.mark.cluster


def evalsha_calls(cluster: LocalCluster) -> list[int]:
    """EVALSHA calls each primary has run so far."""
    calls = []
    for node in cluster.nodes:
        with node.client(5.0) as c:
            stats = c.info("commandstats")
        calls.append(int(stats.get("cmdstat_evalsha", {}).get("calls", 0)))
    return calls


async def test_one_call_per_bucket_and_turn(
    cluster_clients: RedisClients, local_cluster: LocalCluster
) -> None:
    """A sale of 3 buckets, one on each primary, with stock enough in each
    bucket: once the process knows the buckets, 150 buys at once are about
    one call per bucket (batches of 64 at most)."""
    scripts = Scripts(cluster_clients, admit_batch=64)
    assert (await scripts.sale_put("hot", {"stock": 3000, "buckets": 3})).sale
    for i in range(30):  # admit.lua loaded on every primary
        await scripts.admit("hot", f"warm{i}", 1)
    before = evalsha_calls(local_cluster)
    results = await asyncio.gather(*(scripts.admit("hot", f"u{i}", 1) for i in range(150)))
    assert Counter(r.outcome for r in results) == {Admit.OK: 150}
    spent = [a - b for a, b in zip(evalsha_calls(local_cluster), before, strict=True)]
    assert all(n >= 1 for n in spent), spent  # every primary admitted some
    assert sum(spent) <= 3 * 3, spent  # ≤ 3 batches per bucket (~50 buys each), no home


async def test_a_crowd_in_batches_sells_exactly_the_stock_of_three_buckets(
    cluster_clients: RedisClients,
) -> None:
    """900 buys at once for 300 units spread over 3 buckets: the buckets run
    out and are refilled from the pool between batches; exactly 300 admitted,
    no user twice, nothing left."""
    scripts = Scripts(cluster_clients, admit_batch=64)
    await scripts.sale_put("hot", {"stock": 300, "buckets": 3})
    results = await asyncio.gather(*(scripts.admit("hot", f"u{i}", 1) for i in range(900)))
    counts = Counter(r.outcome for r in results)
    assert counts == {Admit.OK: 300, Admit.SOLD_OUT: 600}
    assert len({r.order_id for r in results if r.outcome is Admit.OK}) == 300
    summed = await read_summed(cluster_clients.redis, "hot")
    assert (summed["stock_left"], summed["n_queued"]) == ("0", "300")


async def test_a_sale_without_buckets_is_one_call_per_turn(
    cluster_clients: RedisClients, local_cluster: LocalCluster
) -> None:
    scripts = Scripts(cluster_clients, admit_batch=64)
    sale = local_cluster.sale_on(1)
    await scripts.sale_put(sale, {"stock": 51})
    await scripts.admit(sale, "warm", 1)  # admit.lua loaded there
    before = evalsha_calls(local_cluster)
    results = await asyncio.gather(*(scripts.admit(sale, f"u{i}", 1) for i in range(60)))
    assert Counter(r.outcome for r in results) == {Admit.OK: 50, Admit.SOLD_OUT: 10}
    spent = [a - b for a, b in zip(evalsha_calls(local_cluster), before, strict=True)]
    assert spent == [0, 1, 0]
    assert await cluster_clients.redis.hget(keys.sale(sale), "stock_left") == "0"


async def test_a_batch_answered_moved_is_sent_whole_to_the_new_primary(
    cluster_clients: RedisClients, local_cluster: LocalCluster
) -> None:
    """The sale's slot moved after this process read the slot map: the batch
    is answered MOVED (not run) and sent again, whole, where the slot is now;
    every buy admitted once."""
    scripts = Scripts(cluster_clients, admit_batch=64)
    sale = local_cluster.sale_on(0, prefix="mv")
    await scripts.sale_put(sale, {"stock": 100, "per_user_limit": 1})
    await scripts.admit(sale, "warm", 1)  # the slot map read, admit.lua loaded on node 0
    await cluster_clients.pipe.execute_at(
        local_cluster.nodes[1].address, "SCRIPT", "LOAD", "return 1"
    )
    try:
        local_cluster.migrate_slot(slot_of(keys.sale(sale)), 1, batch=50)
        moved = cluster_clients.pipe.redirected["MOVED"]
        results = await asyncio.gather(*(scripts.admit(sale, f"u{i}", 1) for i in range(40)))
        assert Counter(r.outcome for r in results) == {Admit.OK: 40}
        assert cluster_clients.pipe.redirected["MOVED"] == moved + 1  # one batch, one MOVED
        summed = await read_summed(cluster_clients.redis, sale)
        assert (summed["stock_left"], summed["n_queued"]) == ("59", "41")
    finally:
        local_cluster.ensure_running()  # the slot back to node 0
