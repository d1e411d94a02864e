"""``serve --role``, in process: a worker serves only the probes and
/metrics, a gateway admits without delivering, and the local shield divides
the rate by the live gateways only."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from seckill.http.state import RUNTIME
from seckill.pipeline.consumer import GROUP
from seckill.redis import keys
from seckill.redis import scripts as scripts_module
from seckill.tools.invariants import check_buckets
from tests.helpers.api import ADMIN, admin_sale, create_sale, crowd
from tests.helpers.gateway import until
from tests.helpers.webhook import Webhook
from tests.pipeline.conftest import Client, MakeClient

#: what a worker does not serve: the buy and order routes, the admin API, the
#: dashboard and the API description
NOT_ON_A_WORKER = [
    ("POST", "/api/v1/sales/s1/orders"),
    ("GET", "/api/v1/sales/s1"),
    ("GET", "/api/v1/orders/s1.AAAAAAAAAAAAAAAA"),
    ("GET", "/admin/v1/sales"),
    ("PUT", "/admin/v1/sales/s1"),
    ("POST", "/admin/v1/orders/s1.AAAAAAAAAAAAAAAA/cancel"),
    ("GET", "/admin/v1/limits"),
    ("GET", "/dashboard"),
    ("GET", "/openapi.json"),
    ("GET", "/"),
]


async def test_a_worker_serves_only_the_probes_and_metrics(make_client: MakeClient) -> None:
    worker = await make_client(role="worker")
    for path in ("/healthz", "/readyz", "/metrics"):
        resp = await worker.get(path)
        assert resp.status == 200, (path, await resp.text())
    for method, path in NOT_ON_A_WORKER:
        resp = await worker.request(method, path, headers={**ADMIN, "X-User-Id": "u"}, json={})
        assert resp.status == 404, (method, path)
        assert await resp.json() == {"error": "not_found", "message": "No such resource."}
    rt = worker.app[RUNTIME]
    assert rt.pipeline is not None and rt.pipeline.running
    assert rt.listener is not None and not rt.listening  # no events to listen to


async def test_a_gateway_admits_and_a_worker_delivers(
    make_client: MakeClient, redis: Redis, webhook: Webhook
) -> None:
    gateway = await make_client(role="gateway", order_sink=webhook.url)
    assert (await gateway.get("/readyz")).status == 200  # ready without a pipeline
    assert gateway.app[RUNTIME].pipeline is None
    await create_sale(gateway, "r1", stock=20)
    admitted = await crowd(gateway, "r1", [f"u{i}" for i in range(25)])
    assert len(admitted) == 20
    # nobody reads the stream: every entry waits there, not even a group to read it
    assert await redis.xlen(keys.stream("r1")) == 20
    assert await redis.xinfo_groups(keys.stream("r1")) == []
    assert webhook.raw == 0
    assert (await admin_sale(gateway, "r1"))["backlog"] == 20
    # the buy metrics know the sale without a pipeline
    await until(lambda: "r1" in gateway.app[RUNTIME].known_sales, 5, "the sale index read")

    await make_client(role="worker", order_sink=webhook.url)
    wanted = {o["order_id"] for o in admitted}
    await until(lambda: webhook.delivered == wanted, 20, "every order delivered")
    assert set(webhook.by_key.values()) == {1}
    await until(lambda: _confirmed(gateway, "r1", 20), 10, "every order confirmed")
    assert (await redis.xpending(keys.stream("r1"), GROUP))["pending"] == 0


async def _confirmed(client: Client, sale: str, n: int) -> bool:
    return (await admin_sale(client, sale))["orders"]["confirmed"] == n


async def test_the_shield_divides_by_the_gateways_only(
    make_client: MakeClient, redis: Redis
) -> None:
    gateway = await make_client(role="gateway")
    both = await make_client(role="all")
    workers = [await make_client(role="worker") for _ in range(2)]
    for client in (gateway, both):
        rt = client.app[RUNTIME]
        await until(lambda rt=rt: rt.processes == 2, 5, "two live gateways counted")
    assert await redis.zcard(keys.GATEWAYS) == 2
    for worker in workers:
        assert worker.app[RUNTIME].processes == 1  # a worker never counts (nor beats)
    # the shield's share: the rate split over the two gateways, times the headroom
    resp = await gateway.put("/admin/v1/limits", json={"rate": 100, "burst": 10}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    rt = gateway.app[RUNTIME]
    await until(lambda: rt.shield.rate is not None, 5, "the limits applied")
    assert rt.shield.rate == pytest.approx(100 * 2.0 / 2)


async def test_a_gateway_finishes_an_interrupted_transfer_by_itself(
    make_client: MakeClient, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process died between the two steps of a stock transfer of a sale with
    buckets (taken from the pool, never credited): the reconciler that every
    admitting process runs finishes it, with no buy or operator involved."""
    monkeypatch.setattr(scripts_module, "RECONCILE_INTERVAL", 0.05)
    gateway = await make_client(role="gateway")
    await create_sale(gateway, "x1", stock=60, buckets=3)
    tags = await gateway.app[RUNTIME].scripts.route("x1")
    assert tags is not None
    pool = int(await redis.hget(keys.sale("x1"), "pool"))  # type: ignore[arg-type]
    long_ago = (await redis.time())[0] * 1000 - 10 * scripts_module.RECONCILE_MIN_AGE_MS
    # step 1 only, as a process that died a while ago left it
    taken = await redis.eval(
        scripts_module.lua_source("xfer_take"),
        3,
        keys.sale("x1"),
        keys.xfer_out("x1"),
        keys.xfer_done("x1"),
        "cut",
        "pool",
        5,
        0,
        tags[2],
        long_ago,
    )
    assert taken[0] == 5 and int(await redis.hget(keys.sale("x1"), "pool")) == pool - 5  # type: ignore[arg-type]

    async def finished() -> bool:
        report = await check_buckets(redis, "x1")
        assert report.ok, report.problems
        return report.outstanding == 0 and report.in_flight == 0

    await until(finished, 5, "the interrupted transfer finished by the gateway's reconciler")
    assert await redis.zscore(keys.xfer_in(tags[2]), "cut") is not None


async def test_the_worker_sweeps_the_pay_window_and_every_gateway_hears_it(
    make_client: MakeClient, redis: Redis
) -> None:
    """Issue 15 with roles: the sweeper runs where the pipeline runs (the
    worker); a gateway that answered sold_out from its local flag hears the
    expiry (sale_changed) and sells the returned units again."""
    gateway = await make_client(role="gateway")
    await make_client(role="worker")
    await create_sale(gateway, "pw-roles", stock=3, pay_window_s=1)
    first = await crowd(gateway, "pw-roles", ["a", "b", "c", "d"])
    assert len(first) == 3
    resp = await gateway.post("/api/v1/sales/pw-roles/orders", headers={"X-User-Id": "e"})
    assert (resp.status, (await resp.json())["error"]) == (409, "sold_out")
    cache = gateway.app[RUNTIME].cache
    assert cache.is_sold_out("pw-roles")  # answered from memory until told
    before = cache.generation("pw-roles")

    async def expired() -> bool:
        return (await admin_sale(gateway, "pw-roles"))["orders"]["expired"] == 3

    await until(expired, 20, "the worker's sweeper to expire the 3 orders")
    # the gateway's sold-out flag cleared by the worker's event: it sells again
    # told by the worker's sale_changed event (not the flag's own TTL): its
    # generation moved, and the flag is down
    await until(
        lambda: cache.generation("pw-roles") > before and not cache.is_sold_out("pw-roles"),
        5,
        "the gateway to hear the expiry",
    )
    again = await crowd(gateway, "pw-roles", ["e", "f", "g", "h"])
    assert len(again) == 3
