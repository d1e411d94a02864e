"""Faults in cluster mode for a sale with buckets (issue 13, item 8), under
crowds of hundreds of concurrent buyers: buyers skewed onto one bucket (two
gateways), a primary killed mid-load holding one bucket or the home (the
pool), a bucket's slot migrated mid-load, SCRIPT FLUSH on every primary, and
the scripts lost on the live primaries while one is dead.

Every time the books are exact (``check_buckets`` / ``check_sale``): pool +
Σ buckets + in flight = stock_total − units held, nobody over the limit, the
orders in Redis are exactly the 202s (and the 503 ``outcome_unknown`` buys
Redis did admit), and a last crowd sells exactly what is left. ``sold_out``
is only ever answered once the sale is empty.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from seckill.http.state import RUNTIME
from seckill.redis import keys
from seckill.redis.client import RedisClients, connect
from seckill.redis.scripts import Scripts, bucket_of_order, bucket_of_user, lua_source
from seckill.settings import Settings
from seckill.tools.invariants import (
    HOLDING,
    BucketReport,
    check_buckets,
    check_sale,
    wait_drained,
)
from tests.helpers.api import ADMIN, create_sale, make_app
from tests.helpers.cluster import LocalCluster, slot_of

pytestmark = [pytest.mark.cluster, pytest.mark.fault]

Client = TestClient  # type: ignore[type-arg]

#: seconds a crowd may take before the test fails
CROWD_TIMEOUT = 30
#: seconds a buy routed to a dead primary may take: refused at once, or (in
#: flight when it died) settled within --redis-timeout (1 s here) past its
#: deadline (1 s)
DEAD_ANSWER_WITHIN = 3.5
#: seconds the gateway's worker has to deliver every admitted order
DRAIN_WITHIN = 20


@dataclass(frozen=True, slots=True)
class Answer:
    user: str
    status: int
    body: dict[str, Any]
    #: time.monotonic() when the buy was sent, and seconds until its answer
    started: float
    took: float
    #: wall clock (ms) when the answer was in: comparable with an order's
    #: created_at (Redis TIME on this host)
    at_ms: int

    @property
    def error(self) -> str:
        return str(self.body.get("error", ""))


def users_of_bucket(k: int, n: int, count: int, prefix: str) -> list[str]:
    """*count* user ids that buy in bucket *k* of *n* (crc32(user) mod n)."""
    found: list[str] = []
    i = 0
    while len(found) < count:
        if bucket_of_user(f"{prefix}{i}", n) == k:
            found.append(f"{prefix}{i}")
        i += 1
    return found


def interleave(*groups: list[str]) -> list[str]:
    return [u for row in zip(*groups, strict=True) for u in row]


async def buy(client: Client, sale: str, user: str, idem: str | None = None) -> Answer:
    headers = {"X-User-Id": user}
    if idem is not None:
        headers["Idempotency-Key"] = idem
    started = time.monotonic()
    resp = await client.post(f"/api/v1/sales/{sale}/orders", headers=headers)
    body = await resp.json()
    took = time.monotonic() - started
    return Answer(user, resp.status, body, started, took, time.time_ns() // 1_000_000)


async def crowd(
    clients: list[Client],
    sale: str,
    users: Iterable[str],
    *,
    concurrency: int = 200,
    fault: Callable[[], Any] | None = None,
    after: int = 0,
    then: int | None = None,
    window: list[float] | None = None,
) -> list[Answer]:
    """One buy per user, *concurrency* at a time, buyer i through gateway
    i mod len(clients). *fault* (run in a thread) starts once *after* answers
    are in while the crowd goes on; with *then*, the crowd stops *then*
    answers after the fault is over (*users* may be endless). *window* gets
    time.monotonic() when the fault started and when it was over."""
    answers: list[Answer] = []
    todo: Iterator[str] = iter(users)
    started, over = asyncio.Event(), asyncio.Event()
    stop_at: list[int] = []
    if after == 0:
        started.set()

    async def buyer(client: Client) -> None:
        for user in todo:
            answers.append(await buy(client, sale, user))
            if len(answers) >= after:
                started.set()
            if then is not None and over.is_set():
                if not stop_at:
                    stop_at.append(len(answers) + then)
                if len(answers) >= stop_at[0]:
                    return

    async def faulty() -> None:
        await started.wait()
        if window is not None:
            window.append(time.monotonic())
        if fault is not None:
            await asyncio.to_thread(fault)
        if window is not None:
            window.append(time.monotonic())
        over.set()

    try:
        async with asyncio.timeout(CROWD_TIMEOUT):
            buyers = (buyer(clients[i % len(clients)]) for i in range(concurrency))
            await asyncio.gather(faulty(), *buyers)
    except TimeoutError:
        raise AssertionError(f"a crowd on sale {sale} not answered in {CROWD_TIMEOUT}s") from None
    return answers


async def retrying_crowd(client: Client, sale: str, users: list[str]) -> list[Answer]:
    """One buy per user, all at once, each with an Idempotency-Key and sent
    again (the same key: it never buys twice) while it is answered 503, for at
    most CROWD_TIMEOUT: a crowd as clients that honour Retry-After send it
    once a primary is back (the gateway's first commands to it may still find
    a connection to the dead process)."""

    async def one(user: str) -> Answer:
        while True:
            answer = await buy(client, sale, user, idem=f"last-{user}")
            if answer.status != 503:
                return answer
            await asyncio.sleep(0.05)  # a client's back-off, not a synchronisation

    try:
        async with asyncio.timeout(CROWD_TIMEOUT):
            return list(await asyncio.gather(*(one(u) for u in users)))
    except TimeoutError:
        raise AssertionError(f"sale {sale}: 503s for {CROWD_TIMEOUT}s after the fault") from None


def statuses(answers: Iterable[Answer]) -> Counter[int]:
    return Counter(a.status for a in answers)


async def exact_books(redis: Any, sale: str, answers: list[Answer]) -> BucketReport:
    """The sale's books are exact: every check of the checker passes (pool +
    Σ buckets + in flight = stock_total − held, nobody over the limit, each
    user in one bucket, the counters match the orders), every 202 is an order
    holding its unit, and every order holding a unit is a 202 or a 503
    ``outcome_unknown`` that Redis did admit (no buy admitted twice or
    unseen). Read at rest: once the gateway's worker delivered every order
    (its counters and its orders are read one after the other). Returns the
    report."""
    assert await wait_drained(redis, sale, DRAIN_WITHIN), f"{sale}: orders still queued"
    checks = await check_sale(redis, sale, require_drained=True)
    assert all(c.ok for c in checks), [c.line() for c in checks]
    report = await check_buckets(redis, sale)
    assert report.ok, report.problems
    admitted = [a.body["order_id"] for a in answers if a.status == 202]
    assert len(set(admitted)) == len(admitted), "an order id answered twice"
    unknown = {a.body["order_id"] for a in answers if a.error == "outcome_unknown"}
    holding = {i for i, o in report.orders.items() if o["status"] in HOLDING}
    assert set(admitted) <= holding, set(admitted) - holding
    assert holding - set(admitted) <= unknown, holding - set(admitted) - unknown
    per_user = Counter(report.orders[i]["user_id"] for i in holding)
    assert max(per_user.values(), default=0) <= int(report.sale["per_user_limit"]), per_user
    # no sold_out while a unit was left: every one answered after the last
    # admission (nothing is put back in these tests)
    refused = [a.at_ms for a in answers if a.error == "sold_out"]
    if refused:
        assert report.available == 0
        last_admitted = max(int(report.orders[i]["created_at"]) for i in holding)
        assert min(refused) >= last_admitted, (min(refused), last_admitted)
    return report


@pytest.fixture
async def checker(local_cluster: LocalCluster) -> Any:
    """Clients of the test's own, made when asked for (after a restart: no
    connection to a dead process), all closed at the end."""
    made: list[RedisClients] = []

    def make() -> RedisClients:
        made.append(connect(local_cluster.url, timeout=5.0))
        return made[-1]

    yield make
    for clients in made:
        await clients.aclose()


async def bucket_nodes(
    clients: RedisClients, local_cluster: LocalCluster, sale: str
) -> tuple[tuple[str, ...], list[int]]:
    """The sale's bucket tags and, for each, the index of the node serving it."""
    tags = await Scripts(clients).route(sale)
    assert tags is not None and len(tags) == 3
    return tags, [local_cluster.node_of(keys.sale(t)).index for t in tags]


# -- 1. skewed buyers ------------------------------------------------------------


async def test_buyers_skewed_onto_one_bucket_never_hear_sold_out_while_stock_is_left(
    cluster_client: Client,
    cluster_clients: RedisClients,
    cluster_settings: Settings,
    aiohttp_client: Any,
    tmp_path: Path,
) -> None:
    """700 buyers, all in bucket 1, for 400 units spread over 3 buckets on 3
    primaries, through two gateways (each refills and drains on its own):
    exactly 400 admitted, the other 300 sold_out, and every sold_out answered
    after the last unit was admitted (by Redis's clock, on this host)."""
    second_settings = dataclasses.replace(cluster_settings, data_dir=tmp_path / "second")
    second_settings.data_dir.mkdir()
    second: Client = await aiohttp_client(make_app(second_settings))
    await create_sale(cluster_client, "skew", stock=400, buckets=3, per_user_limit=1)
    users = users_of_bucket(1, 3, 700, "s")
    answers = await crowd([cluster_client, second], "skew", users, concurrency=300)
    assert statuses(answers) == {202: 400, 409: 300}
    assert {a.error for a in answers if a.status == 409} == {"sold_out"}
    assert {bucket_of_order(a.body["order_id"]) for a in answers if a.status == 202} == {1}
    report = await exact_books(cluster_clients.redis, "skew", answers)
    assert report.available == 0 and report.bucket_stock == [0, 0, 0], report.problems
    last_admitted = max(int(o["created_at"]) for o in report.orders.values())
    first_refusal = min(a.at_ms for a in answers if a.status == 409)
    assert first_refusal >= last_admitted, (first_refusal, last_admitted)


# -- 2. a primary killed mid-load --------------------------------------------------


async def test_a_bucket_primary_killed_mid_load(
    cluster_client: Client,
    cluster_clients: RedisClients,
    local_cluster: LocalCluster,
    checker: Callable[[], RedisClients],
) -> None:
    """A sale of 600 units in 3 buckets, its home on node 0; the primary of
    another bucket is SIGKILLed while 150 buyers per bucket buy (and a refill
    of that bucket is cut after its first step): that bucket's buys answer 503
    within DEAD_ANSWER_WITHIN (at once once it is dead), the other buckets'
    all 202 (their stock and the pool's last), never a 409. Back up, and
    after the reconciler (the cut refill credited once), the books are exact
    and a last crowd buys exactly the rest."""
    sale = local_cluster.sale_on(0, "kb")
    home = local_cluster.node_of(keys.sale(sale)).index
    await create_sale(cluster_client, sale, stock=600, buckets=3, per_user_limit=1)
    tags, nodes = await bucket_nodes(cluster_clients, local_cluster, sale)
    victim = next(k for k in range(3) if nodes[k] != home)
    dead = nodes[victim]
    groups = [users_of_bucket(k, 3, 170, f"k{k}-") for k in range(3)]
    # and 100 more of the dead bucket last: buys sent once it is dead
    more = users_of_bucket(victim, 3, 270, f"k{victim}-")[170:]
    warm = await crowd([cluster_client], sale, interleave(*(g[:20] for g in groups)))
    assert statuses(warm) == {202: 60}
    # a refill of the doomed bucket cut after its first step (its gateway
    # died): 20 units in flight from the pool, to be credited once it is back
    cut = "cut-by-the-kill"
    assert (await Scripts(cluster_clients).take(sale, tags[victim], 20, xid=cut))[0] == 20
    report = await check_buckets(cluster_clients.redis, sale)
    assert report.ok and report.in_flight == 20, report.problems
    window: list[float] = []
    try:
        during = await crowd(
            [cluster_client],
            sale,
            interleave(*(g[20:] for g in groups)) + more,
            concurrency=150,
            fault=lambda: local_cluster.kill(dead),
            after=60,
            window=window,
        )
        killed = window[1]
        mine = [a for a in during if bucket_of_user(a.user, 3) == victim]
        others = [a for a in during if bucket_of_user(a.user, 3) != victim]
        assert set(statuses(mine)) <= {202, 503}, statuses(mine)
        failed = [a for a in mine if a.status == 503]
        assert all(a.error in ("unavailable", "outcome_unknown") for a in failed), failed[0]
        assert all(a.took < DEAD_ANSWER_WITHIN for a in failed), max(a.took for a in failed)
        after_kill = [a for a in mine if a.started > killed]
        assert len(after_kill) >= 50 and {a.status for a in after_kill} == {503}
        assert all(a.took < 1.0 for a in after_kill), max(a.took for a in after_kill)
        assert statuses(others) == {202: len(others)}, statuses(others)
    finally:
        local_cluster.restart(dead)
    redis = checker().redis
    report = await exact_books(redis, sale, warm + during)
    # the reconciler finishes the transfer the kill cut: credited once
    await Scripts(checker()).reconcile(sale)
    report = await exact_books(redis, sale, warm + during)
    assert report.in_flight == 0 and report.outstanding == 0
    assert await redis.zscore(keys.xfer_in(tags[victim]), cut) is not None
    assert await redis.zscore(keys.xfer_done(sale), cut) is not None
    rest = report.available
    assert rest > 0
    last_users = interleave(*(users_of_bucket(k, 3, rest // 3 + 20, f"z{k}-") for k in range(3)))
    last = await retrying_crowd(cluster_client, sale, last_users)
    assert statuses(last) == {202: rest, 409: len(last_users) - rest}, statuses(last)
    assert {a.error for a in last if a.status == 409} == {"sold_out"}
    report = await exact_books(redis, sale, warm + during + last)
    assert report.available == 0


async def test_the_home_primary_killed_mid_load(
    cluster_client: Client,
    cluster_clients: RedisClients,
    local_cluster: LocalCluster,
    checker: Callable[[], RedisClients],
) -> None:
    """The primary of the sale's home (its pool, and one bucket) is
    SIGKILLed mid-load: the buckets on the other primaries sell exactly the
    stock they hold; a buy that then needs a refill from the pool answers 503,
    never sold_out. Back up: exact, and a last crowd buys exactly the rest."""
    sale = local_cluster.sale_on(1, "kh")
    home = local_cluster.node_of(keys.sale(sale)).index
    await create_sale(cluster_client, sale, stock=600, buckets=3, per_user_limit=1)
    tags, nodes = await bucket_nodes(cluster_clients, local_cluster, sale)
    alive = [k for k in range(3) if nodes[k] != home]
    assert len(alive) == 2
    groups = [users_of_bucket(k, 3, 170, f"h{k}-") for k in range(3)]
    warm = await crowd([cluster_client], sale, interleave(*(g[:10] for g in groups)))
    assert statuses(warm) == {202: 30}
    window: list[float] = []
    stock_at_kill: dict[int, int] = {}

    def kill_home() -> None:
        # the buys go on while these are read: what the alive buckets hold
        # when the pool dies is read after it died
        local_cluster.kill(home)
        for k in alive:
            with local_cluster.nodes[nodes[k]].client() as c:
                stock_at_kill[k] = int(c.hget(keys.sale(tags[k]), "stock_left") or 0)

    try:
        during = await crowd(
            [cluster_client],
            sale,
            interleave(*(g[10:] for g in groups)),
            concurrency=150,
            fault=kill_home,
            after=30,
            window=window,
        )
        assert 409 not in statuses(during), statuses(during)
        for k in alive:
            mine = [a for a in during if bucket_of_user(a.user, 3) == k]
            late = [a for a in mine if a.started > window[1]]
            # bought once the pool was gone: at most what the bucket held (no
            # refill without the pool), and it sold down to 0 (below)
            sold_late = sum(1 for a in late if a.status == 202)
            assert sold_late <= stock_at_kill[k]
            assert {a.status for a in mine} <= {202, 503}, statuses(mine)
            assert {a.error for a in mine if a.status == 503} <= {"unavailable"}
            assert all(a.took < DEAD_ANSWER_WITHIN for a in mine if a.status == 503)
            assert sum(1 for a in mine if a.status == 503) >= 1  # a refill was needed
        for k in alive:  # sold down to 0 while the pool was gone
            with local_cluster.nodes[nodes[k]].client() as c:
                assert c.hget(keys.sale(tags[k]), "stock_left") == "0"
        lost = [a for a in during if bucket_of_user(a.user, 3) not in alive]
        assert {a.status for a in lost if a.started > window[1]} == {503}
    finally:
        local_cluster.restart(home)
    redis = checker().redis
    await exact_books(redis, sale, warm + during)
    await Scripts(checker()).reconcile(sale)
    report = await exact_books(redis, sale, warm + during)
    assert report.in_flight == 0 and report.outstanding == 0
    rest = report.available
    assert rest > 0
    last_users = interleave(*(users_of_bucket(k, 3, rest // 3 + 20, f"y{k}-") for k in range(3)))
    last = await retrying_crowd(cluster_client, sale, last_users)
    assert statuses(last) == {202: rest, 409: len(last_users) - rest}, statuses(last)
    report = await exact_books(redis, sale, warm + during + last)
    assert report.available == 0


# -- 3. a bucket's slot migrated mid-load --------------------------------------------


async def test_a_bucket_slot_migrated_mid_load_admits_nobody_twice(
    cluster_client: Client,
    cluster_clients: RedisClients,
    local_cluster: LocalCluster,
) -> None:
    """The slot of one bucket (not the home's) moves to another primary while
    buyers (each twice, a limit of 1) keep coming and the buckets refill from
    the pool: answers are 202, 409 limit_reached or 503 (not run), no buy
    admitted twice, the books exact; a last crowd buys exactly the rest."""
    sale = local_cluster.sale_on(0, "mb")
    home = local_cluster.node_of(keys.sale(sale)).index
    await create_sale(cluster_client, sale, stock=600, buckets=3, per_user_limit=1)
    tags, nodes = await bucket_nodes(cluster_clients, local_cluster, sale)
    moving = next(k for k in range(3) if nodes[k] != home)
    target = next(i for i in range(3) if i != nodes[moving])
    slot = slot_of(keys.sale(tags[moving]))

    def twice() -> Iterator[str]:
        """Each user twice in a row; every other user buys in the moving bucket."""
        i = 0
        while True:
            for user in (f"m{moving}-{i}", f"o-{i}"):
                if user.startswith("m") and bucket_of_user(user, 3) != moving:
                    continue
                yield user
                yield user
            i += 1

    moved: list[int] = []
    try:
        answers = await crowd(
            [cluster_client],
            sale,
            twice(),
            concurrency=50,
            fault=lambda: moved.append(local_cluster.migrate_slot(slot, target, batch=10)),
            after=150,
            then=200,
        )
        assert moved and moved[0] > 20, moved  # the bucket's keys and its orders moved
        assert local_cluster.node_of(keys.sale(tags[moving])).index == target
        assert set(statuses(answers)) <= {202, 409, 503}, statuses(answers)
        # sold_out only if the crowd bought everything before it stopped
        assert {a.error for a in answers if a.status == 409} <= {"limit_reached", "sold_out"}
        assert statuses(answers)[202] >= 200
        redirected = cluster_client.app[RUNTIME].clients.pipe.redirected
        # the moving bucket ran out and was refilled from the pool (on both sides of the move)
        assert await cluster_clients.redis.zcard(keys.xfer_in(tags[moving])) >= 1
        assert redirected["MOVED"] + redirected["ASK"] > 0, redirected
        report = await exact_books(cluster_clients.redis, sale, answers)
        await Scripts(cluster_clients).reconcile(sale)
        report = await exact_books(cluster_clients.redis, sale, answers)
        assert report.in_flight == 0 and report.outstanding == 0
        # transfers ran: the buckets sold more than their first share
        assert report.pool < 300, report.pool
        rest = report.available
        users = interleave(*(users_of_bucket(k, 3, rest // 3 + 20, f"w{k}-") for k in range(3)))
        last = await crowd([cluster_client], sale, users, concurrency=300)
        assert statuses(last) == Counter({202: rest, 409: len(users) - rest}), statuses(last)
        report = await exact_books(cluster_clients.redis, sale, answers + last)
        assert report.available == 0
    finally:
        local_cluster.ensure_running()  # the slot back to its first owner


# -- 4. SCRIPT FLUSH on every primary ------------------------------------------------


async def test_script_flush_on_every_primary_mid_run(
    cluster_client: Client,
    cluster_clients: RedisClients,
    local_cluster: LocalCluster,
) -> None:
    """Every primary loses its scripts while 900 buyers buy 600 units in 3
    buckets: admit.lua and the transfer scripts are loaded again (NOSCRIPT:
    not run), every buy is answered 202 or sold_out, exactly 600 admitted."""
    sale = local_cluster.sale_on(2, "fb")
    await create_sale(cluster_client, sale, stock=600, buckets=3, per_user_limit=1)

    def flush() -> None:
        for node in local_cluster.nodes:
            with node.client() as c:
                c.script_flush()

    users = [f"f{i}" for i in range(900)]
    answers = await crowd([cluster_client], sale, users, concurrency=200, fault=flush, after=150)
    assert statuses(answers) == {202: 600, 409: 300}, statuses(answers)
    assert {a.error for a in answers if a.status == 409} == {"sold_out"}
    report = await exact_books(cluster_clients.redis, sale, answers)
    assert report.available == 0 and report.in_flight == 0
    # the transfers that emptied the pool ran after the flush: loaded again
    take = AsyncScript(cluster_clients.redis, lua_source("xfer_take"))
    home = local_cluster.node_of(keys.sale(sale))
    with home.client() as c:
        assert c.script_exists(take.sha) == [True]


async def test_scripts_lost_on_the_live_primaries_while_one_is_dead(
    cluster_client: Client,
    cluster_clients: RedisClients,
    local_cluster: LocalCluster,
    checker: Callable[[], RedisClients],
) -> None:
    """One primary (a bucket's) is dead and the others lose their scripts
    meanwhile (a restart, a SCRIPT FLUSH): the live buckets still refill from
    the pool — the transfer scripts are loaded again on the primaries that
    run them, not on every primary, which fails while one is down — and an
    order on a live primary is still cancelled. Back up: exact."""
    sale = local_cluster.sale_on(0, "pd")
    home = local_cluster.node_of(keys.sale(sale)).index
    await create_sale(cluster_client, sale, stock=300, buckets=3, per_user_limit=1)
    _, nodes = await bucket_nodes(cluster_clients, local_cluster, sale)
    victim = next(k for k in range(3) if nodes[k] != home)
    alive = [k for k in range(3) if nodes[k] != nodes[victim]]
    # 80 buyers in each live bucket: 50 units each, then refills
    users = interleave(*(users_of_bucket(k, 3, 80, f"p{k}-") for k in alive))
    local_cluster.kill(nodes[victim])
    try:
        for node in local_cluster.nodes:
            if node.running:
                with node.client() as c:
                    c.script_flush()
        answers = await crowd([cluster_client], sale, users, concurrency=100)
        assert statuses(answers) == {202: len(users)}, Counter(a.error for a in answers)
        for node in local_cluster.nodes:
            if node.running:
                with node.client() as c:
                    c.script_flush()
        order = answers[0].body["order_id"]
        resp = await cluster_client.post(f"/admin/v1/orders/{order}/cancel", headers=ADMIN)
        assert resp.status == 200 and (await resp.json())["status"] == "cancelled"
    finally:
        local_cluster.restart(nodes[victim])
    report = await exact_books(checker().redis, sale, answers[1:])
    assert report.available == 300 - len(users) + 1


async def test_the_reconciler_finishes_the_live_transfers_while_a_primary_is_dead(
    cluster_client: Client,
    cluster_clients: RedisClients,
    local_cluster: LocalCluster,
    checker: Callable[[], RedisClients],
) -> None:
    """Two refills cut after their take, one into a bucket whose primary then
    dies, one into a live bucket: a reconciler pass finishes the live one (it
    goes on past the dead primary, and says so by raising at the end), and
    the dead one once its primary is back — each credited once."""
    sale = local_cluster.sale_on(0, "rc")
    home = local_cluster.node_of(keys.sale(sale)).index
    await create_sale(cluster_client, sale, stock=300, buckets=3, per_user_limit=1)
    tags, nodes = await bucket_nodes(cluster_clients, local_cluster, sale)
    victim = next(k for k in range(3) if nodes[k] != home)
    live = next(k for k in range(3) if nodes[k] != nodes[victim])
    scripts = Scripts(cluster_clients)
    assert (await scripts.take(sale, tags[victim], 10, xid="cut-dead"))[0] == 10
    assert (await scripts.take(sale, tags[live], 10, xid="cut-live"))[0] == 10
    local_cluster.kill(nodes[victim])
    try:
        clients = checker()
        redis = clients.redis
        # one pass raises (the dead primary) but finishes what it can
        with pytest.raises((RedisError, OSError)):
            await Scripts(clients).reconcile(sale)
        assert await redis.zscore(keys.xfer_in(tags[live]), "cut-live") is not None
        assert await redis.zscore(keys.xfer_done(sale), "cut-live") is not None
        assert await redis.zscore(keys.xfer_done(sale), "cut-dead") is None
    finally:
        local_cluster.restart(nodes[victim])
    clients = checker()
    redis = clients.redis
    assert await Scripts(clients).reconcile(sale) == 1
    report = await check_buckets(redis, sale)
    assert report.ok and report.in_flight == 0 and report.available == 300, report.problems
