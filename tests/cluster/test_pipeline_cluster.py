"""The order pipeline and the events on a real local Redis Cluster: classic
pub/sub reaches a gateway subscribed on another node, and orders of sales on
every primary are delivered exactly once by two worker processes."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from seckill.pipeline.consumer import GROUP, Pipeline, reclaim_lock
from seckill.pipeline.sinks import sink_from_url
from seckill.redis import keys
from seckill.redis.client import RedisClients
from seckill.redis.events import Listener, publish_limits_changed, publish_sale_changed
from seckill.redis.scripts import Scripts
from seckill.settings import Settings
from tests.helpers.api import ADMIN
from tests.helpers.cluster import LocalCluster
from tests.helpers.gateway import Gateway, until
from tests.helpers.webhook import Webhook

pytestmark = pytest.mark.cluster


class Heard:
    """What one listener (one gateway's) received."""

    def __init__(self) -> None:
        self.sales: list[str] = []
        self.limits = 0
        self.subscribed = 0

    def listener(self, redis: Redis | RedisCluster) -> Listener:
        async def limits() -> None:
            self.limits += 1

        async def subscribed() -> None:
            self.subscribed += 1

        return Listener(
            redis,
            on_sale_changed=self.sales.append,
            on_limits_changed=limits,
            on_subscribed=subscribed,
        )


@pytest.fixture
async def cluster(local_cluster: LocalCluster) -> AsyncIterator[LocalCluster]:
    local_cluster.ensure_running()
    local_cluster.flush_all()
    yield local_cluster


def node_client(cluster: LocalCluster, index: int) -> Redis:
    node = cluster.nodes[index]
    return Redis(host=node.host, port=node.port, decode_responses=True)


async def test_a_restock_event_reaches_gateways_subscribed_via_other_nodes(
    cluster: LocalCluster,
) -> None:
    first = cluster.nodes[0]
    whole = RedisCluster(host=first.host, port=first.port, decode_responses=True)
    on_node = [node_client(cluster, i) for i in range(3)]
    # a gateway's listener on each node, and one through the cluster client
    heard = [Heard() for _ in range(4)]
    listeners = [h.listener(c) for h, c in zip(heard, [*on_node, whole], strict=True)]
    tasks = [asyncio.create_task(listener.run()) for listener in listeners]
    try:
        await until(
            lambda: all(lst.subscribed for lst in listeners), 10, "every listener subscribed"
        )
        # published on node 0: heard on every node
        await publish_sale_changed(on_node[0], "restocked")
        await until(lambda: all(h.sales == ["restocked"] for h in heard), 5, "the event everywhere")
        # published on node 2, and through the cluster client
        await publish_limits_changed(on_node[2])
        await publish_sale_changed(whole, "again")  # type: ignore[arg-type]
        await until(
            lambda: all(h.limits == 1 and h.sales == ["restocked", "again"] for h in heard),
            5,
            "both events everywhere",
        )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for c in on_node:
            await c.aclose()
        await whole.aclose()


async def test_the_cluster_listener_moves_on_when_its_node_dies(cluster: LocalCluster) -> None:
    first = cluster.nodes[0]
    whole = RedisCluster(host=first.host, port=first.port, decode_responses=True)
    heard = Heard()
    listener = heard.listener(whole)
    task = asyncio.create_task(listener.run())
    publishers = [node_client(cluster, i) for i in range(3)]
    try:
        await until(lambda: listener.subscribed, 10, "subscribed")
        # which node holds the subscription: the one that sees a subscriber
        counts = [
            (await p.execute_command("PUBSUB", "NUMSUB", "seckill:events"))[1] for p in publishers
        ]
        assert sorted(counts) == [0, 0, 1], counts
        victim = counts.index(1)
        cluster.kill(victim)
        await until(lambda: heard.subscribed >= 2, 15, "subscribed again on another node")
        alive = next(p for i, p in enumerate(publishers) if i != victim)
        await publish_sale_changed(alive, "after")
        await until(lambda: heard.sales == ["after"], 5, "the event after the node's death")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for p in publishers:
            await p.aclose()
        await whole.aclose()
        cluster.ensure_running()


@pytest.fixture
async def webhook() -> AsyncIterator[Webhook]:
    hook = await Webhook().start()
    yield hook
    await hook.stop()


async def test_orders_on_every_primary_are_delivered_once_by_two_worker_processes(
    cluster: LocalCluster,
    cluster_url: str,
    cluster_clients: RedisClients,
    sales: list[str],
    webhook: Webhook,
) -> None:
    redis = cluster_clients.redis
    common = ["--redis-url", cluster_url, "--order-sink", webhook.url]
    with Gateway("--role", "gateway", *common, name="gw") as gw:
        await asyncio.to_thread(gw.wait_ready)
        async with aiohttp.ClientSession() as s:
            for sale_id in sales:
                async with s.put(
                    f"{gw.url}/admin/v1/sales/{sale_id}", json={"stock": 30}, headers=ADMIN
                ) as resp:
                    assert resp.status == 201

            async def buy(sale_id: str, user: str) -> str:
                async with s.post(
                    f"{gw.url}/api/v1/sales/{sale_id}/orders", headers={"X-User-Id": user}
                ) as resp:
                    assert resp.status == 202, await resp.text()
                    return str((await resp.json())["order_id"])

            wanted = set(
                await asyncio.gather(*(buy(sale, f"u{i}") for sale in sales for i in range(30)))
            )
        assert len(wanted) == 90 and webhook.raw == 0
        with Gateway("--role", "worker", "--processes", "2", *common, name="workers") as workers:
            await asyncio.to_thread(workers.wait_ready)
            await until(lambda: webhook.delivered == wanted, 30, "every order delivered")

            async def nothing_pending() -> bool:
                for sale_id in sales:
                    if (await redis.xpending(keys.stream(sale_id), GROUP))["pending"]:
                        return False
                return True

            await until(nothing_pending, 10, "every entry acknowledged")
            assert set(webhook.by_key.values()) == {1}  # exactly once each
            # both worker processes read every stream, each under its own name
            for sale_id in sales:
                consumers = await redis.xinfo_consumers(keys.stream(sale_id), GROUP)
                assert {c["name"].rsplit(":", 1)[1] for c in consumers} == {"0", "1"}
            assert workers.output().count("one blocking read per stream, at most 16") == 2
            assert workers.stop() == 0
        assert gw.stop() == 0


async def _noop(sale_id: str) -> None:
    return None


async def admit(redis: Redis, scripts: Scripts, sale_id: str, users: int) -> set[str]:
    await scripts.sale_put(sale_id, {"stock": users})
    await redis.sadd(keys.SALES_INDEX, sale_id)
    return {(await scripts.admit(sale_id, f"u{u}", 1)).order_id for u in range(users)}


async def blocked_reads(cluster: LocalCluster) -> list[int]:
    """Connections blocked in XREADGROUP on each node. (Each node's count is
    one atomic CLIENT LIST; their sum is not a snapshot: a read may end on
    one node and the next begin on another between two of them — the global
    bound is proven on one node, tests/pipeline/test_streams.py.)"""
    counts = []
    for index in range(len(cluster.nodes)):
        async with node_client(cluster, index) as c:
            clients = await c.client_list()
        counts.append(
            sum(1 for i in clients if i.get("cmd") == "xreadgroup" and "b" in i.get("flags", ""))
        )
    return counts


async def test_fifty_sales_on_three_primaries_within_bounded_blocking_reads(
    cluster: LocalCluster, cluster_clients: RedisClients, settings: Settings, webhook: Webhook
) -> None:
    redis, scripts = cluster_clients.redis, Scripts(cluster_clients)
    wanted: set[str] = set()
    for n in range(50):
        wanted |= await admit(redis, scripts, f"f{n}", 4)
    nodes = {cluster.node_of(keys.stream(f"f{n}")).index for n in range(50)}
    assert nodes == {0, 1, 2}
    options = dataclasses.replace(settings.pipeline_options(), blocking_reads=4)
    sink = sink_from_url(webhook.url, timeout=5)
    pipeline = Pipeline(cluster_clients, scripts, sink, options, "reader", _noop)
    await pipeline.start()
    most = [0, 0, 0]

    async def delivered() -> bool:
        nonlocal most
        most = [max(a, b) for a, b in zip(most, await blocked_reads(cluster), strict=True)]
        return webhook.delivered == wanted

    try:
        assert pipeline.per_stream  # cluster mode: one read per stream
        await until(delivered, 30, "every order of 50 sales delivered")
        for _ in range(5):  # at rest too, the reads keep within their turns
            most = [max(a, b) for a, b in zip(most, await blocked_reads(cluster), strict=True)]
    finally:
        await pipeline.stop()
    assert set(webhook.by_key.values()) == {1}
    # blocking reads ran on every node, never more than the turns on any
    assert all(1 <= n <= 4 for n in most), most


async def test_a_dead_primary_holds_up_only_its_own_sales(
    cluster: LocalCluster,
    cluster_clients: RedisClients,
    settings: Settings,
    sales: list[str],
    webhook: Webhook,
) -> None:
    redis, scripts = cluster_clients.redis, Scripts(cluster_clients)
    orders = {sale_id: await admit(redis, scripts, sale_id, 10) for sale_id in sales}
    cluster.kill(2)  # before the reader ever saw sales[2]
    sink = sink_from_url(webhook.url, timeout=5)
    pipeline = Pipeline(
        cluster_clients, scripts, sink, settings.pipeline_options(), "reader", _noop
    )
    await pipeline.start()
    try:
        live = orders[sales[0]] | orders[sales[1]]
        await until(lambda: webhook.delivered == live, 30, "the live primaries' orders")
        assert not webhook.delivered & orders[sales[2]]
        # from this thread: a node dies with the thread that started it
        # (PR_SET_PDEATHSIG), and a to_thread worker ends with the test's loop
        cluster.restart(2)
        everything = live | orders[sales[2]]
        await until(lambda: webhook.delivered == everything, 30, "the returned primary's orders")
    finally:
        await pipeline.stop()
        cluster.ensure_running()
    assert set(webhook.by_key.values()) == {1}


async def test_the_reclaimer_takes_over_a_dead_consumers_entries_on_every_primary(
    cluster: LocalCluster,
    cluster_clients: RedisClients,
    settings: Settings,
    sales: list[str],
    webhook: Webhook,
) -> None:
    redis, scripts = cluster_clients.redis, Scripts(cluster_clients)
    wanted: set[str] = set()
    for sale_id in sales:
        wanted |= await admit(redis, scripts, sale_id, 5)
        await redis.xgroup_create(keys.stream(sale_id), GROUP, id="0")
        # a process read them and died before delivering
        await redis.xreadgroup(GROUP, "dead", {keys.stream(sale_id): ">"})
    sink = sink_from_url(webhook.url, timeout=5)
    pipeline = Pipeline(cluster_clients, scripts, sink, settings.pipeline_options(), "alive", _noop)
    await pipeline.start()
    try:
        await until(lambda: len(pipeline.sales) == 3, 5, "the sales discovered")
        # each stream's lock sits on the stream's node; one held elsewhere skips that stream
        async with redis.lock(reclaim_lock(sales[1]), timeout=5):
            assert await pipeline.reclaim(idle_ms=0) == 10
        assert await pipeline.reclaim(idle_ms=0) == 5
        await until(lambda: webhook.delivered == wanted, 10, "every order delivered")
    finally:
        await pipeline.stop()
    assert set(webhook.by_key.values()) == {1}
    for index, sale_id in enumerate(sales):
        assert cluster.node_of(reclaim_lock(sale_id)).index == index
        assert (await redis.xpending(keys.stream(sale_id), GROUP))["pending"] == 0


async def test_a_killed_workers_orders_on_every_primary_are_taken_over(
    cluster: LocalCluster,
    cluster_url: str,
    cluster_clients: RedisClients,
    sales: list[str],
    webhook: Webhook,
) -> None:
    """Worker A reads every order and hangs on its sink; kill -9 of A: worker
    B takes its orders over on all three primaries within 30 s, each once."""
    redis = cluster_clients.redis
    black_hole = await Webhook().start()
    black_hole.gate = asyncio.Event()
    base = ["--redis-url", cluster_url, "--delivery-timeout", "60"]
    try:
        with (
            Gateway("--role", "gateway", *base, name="gw") as gw,
            Gateway("--role", "worker", *base, "--order-sink", black_hole.url, name="a") as a,
        ):
            await asyncio.to_thread(gw.wait_ready)
            await asyncio.to_thread(a.wait_ready)
            wanted: set[str] = set()
            async with aiohttp.ClientSession() as s:
                for sale_id in sales:
                    async with s.put(
                        f"{gw.url}/admin/v1/sales/{sale_id}", json={"stock": 10}, headers=ADMIN
                    ) as resp:
                        assert resp.status == 201
                for sale_id in sales:
                    for i in range(10):
                        async with s.post(
                            f"{gw.url}/api/v1/sales/{sale_id}/orders",
                            headers={"X-User-Id": f"u{i}"},
                        ) as resp:
                            assert resp.status == 202
                            wanted.add((await resp.json())["order_id"])

            async def all_on_a() -> bool:
                for sale_id in sales:
                    try:
                        pending = await redis.xpending(keys.stream(sale_id), GROUP)
                    except ResponseError:  # NOGROUP: not discovered yet
                        return False
                    if pending["pending"] != 10:
                        return False
                return True

            await until(all_on_a, 15, "A to hold every order")
            with Gateway("--role", "worker", *base, "--order-sink", webhook.url, name="b") as b:
                await asyncio.to_thread(b.wait_ready)
                a.kill()
                killed = time.monotonic()
                await until(lambda: webhook.delivered == wanted, 30, "B to deliver A's orders")
                print(f"cluster takeover: {time.monotonic() - killed:.1f}s after kill -9")

                async def nothing_pending() -> bool:
                    for sale_id in sales:
                        if (await redis.xpending(keys.stream(sale_id), GROUP))["pending"]:
                            return False
                    return True

                await until(nothing_pending, 10, "every entry acknowledged")
                assert set(webhook.by_key.values()) == {1}
                assert b.stop() == 0
            assert gw.stop() == 0
    finally:
        await black_hole.stop()
