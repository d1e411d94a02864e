"""One sale on several buckets (issue 13): the scripts, the transfers and the
buy path of ``Scripts`` against a real server, with exact counts."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter

from redis.asyncio import Redis

from seckill.pipeline.consumer import GROUP
from seckill.redis import keys
from seckill.redis.client import RedisClients
from seckill.redis.scripts import (
    Admit,
    SalePut,
    Scripts,
    bucket_of_order,
    bucket_of_user,
)
from seckill.tools.invariants import check_buckets

SALE = "hot"


def users_of_bucket(k: int, n: int, count: int, prefix: str = "u") -> list[str]:
    """*count* user ids that hash to bucket *k* of *n*."""
    found: list[str] = []
    i = 0
    while len(found) < count:
        user = f"{prefix}{i}"
        if bucket_of_user(user, n) == k:
            found.append(user)
        i += 1
    return found


async def make_sale(scripts: Scripts, stock: int, buckets: int, limit: int = 1) -> None:
    result = await scripts.sale_put(
        SALE, {"stock": stock, "per_user_limit": limit, "buckets": buckets}
    )
    assert result.outcome is SalePut.CREATED
    assert int(result.sale["stock_left"]) == stock


async def buy_all(scripts: Scripts, users: list[str], quantity: int = 1) -> Counter[Admit]:
    results = await asyncio.gather(*(scripts.admit(SALE, u, quantity) for u in users))
    return Counter(r.outcome for r in results)


async def test_layout(scripts: Scripts, redis: Redis) -> None:
    await make_sale(scripts, 90, 3)
    home = await redis.hgetall(keys.sale(SALE))
    assert home["buckets"] == "3" and "stock_left" not in home
    tags = home["tags"].split()
    assert tags == [f"{SALE}/0", f"{SALE}/1", f"{SALE}/2"]
    # a first share in each bucket (pool / 2N), the rest in the pool
    lefts = [int(await redis.hget(keys.sale(t), "stock_left")) for t in tags]  # type: ignore[arg-type]
    assert lefts == [15, 15, 15] and int(home["pool"]) == 45
    assert (await check_buckets(redis, SALE)).ok


async def test_buckets_one_is_todays_layout(scripts: Scripts, redis: Redis) -> None:
    await make_sale(scripts, 5, 1)
    home = await redis.hgetall(keys.sale(SALE))
    assert "buckets" not in home and "pool" not in home and home["stock_left"] == "5"
    result = await scripts.admit(SALE, "alice", 1)
    assert result.outcome is Admit.OK and bucket_of_order(result.order_id) is None
    assert result.stock_left == 4
    assert await redis.keys(f"*{keys.BUCKET_SEP}*") == []


async def test_crowd_sells_exactly(scripts: Scripts, redis: Redis) -> None:
    await make_sale(scripts, 1000, 3, limit=1)
    users = [f"user{i}" for i in range(5000)]
    outcomes = Counter[Admit]()
    for i in range(0, len(users), 500):
        outcomes += await buy_all(scripts, users[i : i + 500])
    assert outcomes == {Admit.OK: 1000, Admit.SOLD_OUT: 4000}
    report = await check_buckets(redis, SALE)
    assert report.ok, report.problems
    sale = await scripts.read_sale(SALE)
    assert sale is not None and sale["stock_left"] == "0" and sale["n_queued"] == "1000"


async def test_skewed_crowd_no_false_sold_out(scripts: Scripts, redis: Redis) -> None:
    await make_sale(scripts, 300, 3, limit=2)
    users = users_of_bucket(0, 3, 400)
    results = await asyncio.gather(*(scripts.admit(SALE, u, 1) for u in users))
    sold = Counter(r.outcome for r in results)
    assert sold == {Admit.OK: 300, Admit.SOLD_OUT: 100}
    assert {bucket_of_order(r.order_id) for r in results if r.outcome is Admit.OK} == {0}
    assert (await check_buckets(redis, SALE)).ok


async def test_sold_out_only_when_all_empty(scripts: Scripts, redis: Redis) -> None:
    """One by one: every buy of bucket 0 is admitted until the whole sale is gone."""
    await make_sale(scripts, 40, 4, limit=1)
    users = users_of_bucket(0, 4, 45)
    outcomes = [(await scripts.admit(SALE, u, 1)).outcome for u in users]
    assert outcomes == [Admit.OK] * 40 + [Admit.SOLD_OUT] * 5


async def test_quantity_gathers_from_every_bucket(scripts: Scripts, redis: Redis) -> None:
    await make_sale(scripts, 12, 3, limit=12)
    (user,) = users_of_bucket(1, 3, 1)
    assert (await scripts.admit(SALE, user, 13)).outcome is Admit.BAD_QUANTITY
    result = await scripts.admit(SALE, user, 12)
    assert result.outcome is Admit.OK
    (other,) = users_of_bucket(2, 3, 1, prefix="v")
    assert (await scripts.admit(SALE, other, 1)).outcome is Admit.SOLD_OUT
    assert (await check_buckets(redis, SALE)).ok


async def test_crash_between_transfer_steps(scripts: Scripts, redis: Redis) -> None:
    await make_sale(scripts, 100, 2, limit=1)
    tags = await scripts.route(SALE)
    assert tags is not None
    pool_before = int(await redis.hget(keys.sale(SALE), "pool"))  # type: ignore[arg-type]
    # step 1 only: 10 units leave the pool and are in flight
    amount, _, _, state = await scripts.take(SALE, tags[1], 10, xid="x1")
    assert (amount, state) == (10, 0)
    # a re-run of step 1 is a no-op
    assert (await scripts.take(SALE, tags[1], 10, xid="x1"))[0] == 10
    assert int(await redis.hget(keys.sale(SALE), "pool")) == pool_before - 10  # type: ignore[arg-type]
    report = await check_buckets(redis, SALE)
    assert report.ok and report.in_flight == 10 and report.available == 100
    sale = await scripts.read_sale(SALE)
    assert sale is not None and sale["stock_left"] == "100"
    assert await scripts.reconcile(SALE) == 1
    assert await scripts.reconcile(SALE) == 0
    report = await check_buckets(redis, SALE)
    assert report.ok and report.in_flight == 0 and report.outstanding == 0
    # the credit and the ack again: no-ops
    await scripts.finish(SALE, tags[1], "x1", 10)
    assert (await scripts.take(SALE, tags[1], 10, xid="x1"))[3] == 2
    report = await check_buckets(redis, SALE)
    assert report.ok and report.available == 100
    # crash after the credit, before the ack: the reconciler only acknowledges
    amount2 = (await scripts.take(tags[0], SALE, -1, xid="x2"))[0]
    assert amount2 > 0
    await scripts._credit(
        keys=[keys.sale(SALE), keys.xfer_in(SALE)], args=["x2", "pool", amount2, ""]
    )
    report = await check_buckets(redis, SALE)
    assert report.ok and report.in_flight == 0 and report.outstanding == 1
    assert await scripts.reconcile(SALE) == 1
    report = await check_buckets(redis, SALE)
    assert report.ok and report.available == 100 and report.outstanding == 0
    outcomes = await buy_all(scripts, [f"w{i}" for i in range(120)])
    assert outcomes == {Admit.OK: 100, Admit.SOLD_OUT: 20}


async def test_restock_to_pool_and_cancel_to_bucket(scripts: Scripts, redis: Redis) -> None:
    await make_sale(scripts, 6, 3, limit=1)
    users = [f"r{i}" for i in range(6)]
    results = await asyncio.gather(*(scripts.admit(SALE, u, 1) for u in users))
    assert all(r.outcome is Admit.OK for r in results)
    assert (await scripts.admit(SALE, "late", 1)).outcome is Admit.SOLD_OUT
    # restock: the new units go to the pool
    result = await scripts.sale_put(SALE, {"stock": 8})
    assert result.outcome is SalePut.UPDATED and result.sale["stock_left"] == "2"
    assert await redis.hget(keys.sale(SALE), "pool") == "2"
    # cancel: the unit goes back to the order's bucket
    order = results[0].order_id
    owner = await scripts.order_owner(order)
    tags = await scripts.route(SALE)
    assert tags is not None and owner == tags[bucket_of_user("r0", 3)]
    left_before = int(await redis.hget(keys.sale(owner), "stock_left"))  # type: ignore[arg-type]
    await scripts.cancel(owner, order)
    assert int(await redis.hget(keys.sale(owner), "stock_left")) == left_before + 1  # type: ignore[arg-type]
    sale = await scripts.read_sale(SALE)
    assert sale is not None and sale["stock_left"] == "3" and sale["n_cancelled"] == "1"
    assert (await check_buckets(redis, SALE)).ok
    # a cut below what the pool holds drains the buckets first
    result = await scripts.sale_put(SALE, {"stock": 5})
    assert result.outcome is SalePut.UPDATED and result.sale["stock_left"] == "0"
    assert (await scripts.sale_put(SALE, {"stock": 4})).outcome is SalePut.STOCK_CONFLICT
    assert (await scripts.sale_put(SALE, {"buckets": 2})).outcome is SalePut.BUCKETS_IMMUTABLE
    assert (await scripts.sale_put(SALE, {"buckets": 3})).outcome is SalePut.UPDATED
    assert (await check_buckets(redis, SALE)).ok


async def test_settings_reach_the_buckets(scripts: Scripts, redis: Redis) -> None:
    await make_sale(scripts, 10, 2, limit=1)
    await scripts.sale_put(SALE, {"per_user_limit": 3})
    tags = await scripts.route(SALE)
    assert tags is not None
    for tag in tags:
        assert await redis.hget(keys.sale(tag), "per_user_limit") == "3"
    result = await scripts.admit(SALE, "bob", 3)
    assert result.outcome is Admit.OK
    assert (await scripts.admit(SALE, "bob", 1)).outcome is Admit.LIMIT_REACHED


async def test_reconciler_racing_the_crowd_changes_nothing(scripts: Scripts, redis: Redis) -> None:
    """The reconciler finishes transfers the buys are finishing themselves, at
    the same time, over and over: every step is a no-op the second time, so
    the crowd still buys exactly the stock."""
    await make_sale(scripts, 500, 3, limit=1)
    skewed = users_of_bucket(0, 3, 1400, prefix="s") + [f"o{i}" for i in range(600)]
    stop = asyncio.Event()
    passes = 0

    async def reconcile_forever() -> None:
        nonlocal passes
        while not stop.is_set():
            await scripts.reconcile(SALE)
            passes += 1
            await asyncio.sleep(0)

    racer = asyncio.create_task(reconcile_forever())
    try:
        outcomes = Counter[Admit]()
        for i in range(0, len(skewed), 400):
            outcomes += await buy_all(scripts, skewed[i : i + 400])
    finally:
        stop.set()
        await racer
    assert passes > 0
    assert outcomes == {Admit.OK: 500, Admit.SOLD_OUT: 1500}
    report = await check_buckets(redis, SALE)
    assert report.ok and report.available == 0 and report.outstanding == 0, report.problems


async def test_a_bucket_refilled_meanwhile_is_no_sold_out(scripts: Scripts, redis: Redis) -> None:
    """A buy ran out in bucket 0; before it looked for stock, another process
    moved the pool's last units into bucket 0: the pool and bucket 1 are
    empty, but the sale is not sold out — the buy must try again."""
    await make_sale(scripts, 10, 2, limit=1)
    tags = await scripts.route(SALE)
    assert tags is not None
    await scripts.transfer(tags[1], SALE, -1)
    await scripts.transfer(SALE, tags[0], -1)
    assert await redis.hget(keys.sale(tags[0]), "stock_left") == "10"
    assert await scripts._find_stock(SALE, tags, 0, 1) is True
    assert await scripts._find_stock(SALE, tags, 1, 1) is True  # drains bucket 0 for bucket 1
    assert int(await redis.hget(keys.sale(tags[1]), "stock_left")) >= 1  # type: ignore[arg-type]
    # a buy of 11 gathers every unit into bucket 0, then learns 10 < 11
    answers = [await scripts._find_stock(SALE, tags, 0, 11) for _ in range(4)]
    assert answers[-1] is False and answers.index(False) <= 2, answers
    assert await redis.hget(keys.sale(tags[0]), "stock_left") == "10"
    assert (await check_buckets(redis, SALE)).ok


async def test_stock_moved_during_the_quiet_round_is_no_sold_out(
    scripts: Scripts, clients: RedisClients, redis: Redis
) -> None:
    """A buy in bucket 0 finds the pool and buckets 0 and 1 empty. While it
    looks at the buckets one by one, another process drains bucket 2 (not
    looked at yet) into the pool and moves it all into bucket 1 (already
    looked at): the buy's round saw no unit and nothing outstanding, and its
    next take finds the pool empty again — only the pool's ``xfer_seq`` tells
    that units passed through it. The proof must not hold: look again, find
    the units in bucket 1, buy."""
    await make_sale(scripts, 10, 3, limit=1)
    tags = await scripts.route(SALE)
    assert tags is not None
    for tag in tags[:2]:
        await scripts.transfer(tag, SALE, -1)
    await scripts.transfer(SALE, tags[2], -1)
    assert await redis.hget(keys.sale(tags[2]), "stock_left") == "10"
    other = Scripts(clients)  # another process, on the same server
    real = scripts.transfer
    interleaved = False

    async def transfer(
        source: str, dest: str, need: int, *, spread: int = 0, xid: str | None = None
    ) -> tuple[int, int, int, int]:
        nonlocal interleaved
        if (source, dest) == (tags[2], SALE) and not interleaved:
            interleaved = True  # between the buy's look at bucket 1 and at bucket 2
            await other.transfer(tags[2], SALE, -1)
            await other.transfer(SALE, tags[1], -1)
        return await real(source, dest, need, spread=spread, xid=xid)

    scripts.transfer = transfer  # type: ignore[method-assign]
    try:
        assert await scripts._find_stock(SALE, tags, 0, 1) is True
    finally:
        del scripts.transfer
    assert interleaved
    assert int(await redis.hget(keys.sale(tags[0]), "stock_left")) >= 1  # type: ignore[arg-type]
    assert (await scripts.admit(SALE, users_of_bucket(0, 3, 1)[0], 1)).outcome is Admit.OK
    report = await check_buckets(redis, SALE)
    assert report.ok and report.available == 9, report.problems


async def test_the_scripts_by_eval(scripts: Scripts, redis: Redis) -> None:
    """admit.lua on a home hash answers BUCKETED with the tags and changes
    nothing; bucket_put.lua never lets an older settings version win."""
    from seckill.redis.scripts import lua_source

    await make_sale(scripts, 30, 3)
    before = await redis.hgetall(keys.sale(SALE))
    reply = await redis.eval(
        lua_source("admit"),
        8,
        *[keys.sale(SALE)] * 8,
        60, "", "", 1, "", 1, 0, SALE,
        "u", 1, f"{SALE}.abcdefgh00000001", "", "",
    )  # fmt: skip
    assert reply == [[12, 3, f"{SALE}/0 {SALE}/1 {SALE}/2"]]
    assert await redis.hgetall(keys.sale(SALE)) == before
    put = lua_source("bucket_put")
    tag = keys.sale(f"{SALE}/1")
    v = int(before["cfg_v"])
    assert await redis.eval(put, 1, tag, SALE, 1, v + 1, 5, "", 7) == 1
    assert await redis.eval(put, 1, tag, SALE, 1, v, 9, "", 9) == 0  # older: ignored
    assert await redis.hmget(tag, ["starts_at", "per_user_limit", "cfg_v"]) == [
        "5",
        "7",
        str(v + 1),
    ]


async def test_park_and_settle_in_a_bucket(scripts: Scripts, redis: Redis) -> None:
    from seckill.redis.scripts import Settle

    await make_sale(scripts, 6, 3, limit=1)
    result = await scripts.admit(SALE, "pat", 1)
    assert result.outcome is Admit.OK
    owner = await scripts.order_owner(result.order_id)
    assert owner is not None and keys.is_bucket_tag(owner)
    assert await scripts.park(owner, result.order_id, "seckill", "0-1")
    sale = await scripts.read_sale(SALE)
    assert sale is not None and (sale["n_undetermined"], sale["stock_left"]) == ("1", "5")
    outcome, order = await scripts.settle(owner, result.order_id, "release")
    assert outcome is Settle.SETTLED and order["status"] == "failed"
    sale = await scripts.read_sale(SALE)
    assert sale is not None and (sale["n_undetermined"], sale["stock_left"]) == ("0", "6")
    report = await check_buckets(redis, SALE)
    assert report.ok, report.problems


async def test_a_release_in_a_bucket_returns_the_units_to_that_bucket(
    scripts: Scripts, redis: Redis
) -> None:
    """A delivery that failed for good (release.lua, run by the pipeline on
    the bucket's stream): the unit goes back to the order's bucket, where the
    user may buy it again — not to the home hash, where nothing sells it."""
    await make_sale(scripts, 6, 3, limit=1)
    result = await scripts.admit(SALE, "rel", 1)
    assert result.outcome is Admit.OK
    owner = await scripts.order_owner(result.order_id)
    assert owner is not None and keys.is_bucket_tag(owner)
    left = int(await redis.hget(keys.sale(owner), "stock_left"))  # type: ignore[arg-type]
    await redis.xgroup_create(keys.stream(owner), GROUP, id="0")
    [[_, [(entry_id, _)]]] = await redis.xreadgroup(GROUP, "c", {keys.stream(owner): ">"})
    assert await scripts.release(owner, result.order_id, GROUP, entry_id)
    assert int(await redis.hget(keys.sale(owner), "stock_left")) == left + 1  # type: ignore[arg-type]
    assert await redis.hget(keys.sale(SALE), "stock_left") is None
    sale = await scripts.read_sale(SALE)
    assert sale is not None and (sale["stock_left"], sale["n_failed"]) == ("6", "1")
    report = await check_buckets(redis, SALE)
    assert report.ok, report.problems
    again = await scripts.admit(SALE, "rel", 1)
    assert again.outcome is Admit.OK and bucket_of_order(again.order_id) == bucket_of_order(
        result.order_id
    )


async def test_repeat_buyers_in_one_bucket_stop_at_the_limit_while_it_refills(
    scripts: Scripts, redis: Redis
) -> None:
    """100 users of bucket 0, 4 attempts each all in flight at once, limit 2,
    220 units on 3 buckets: bucket 0 runs dry over and over (refills from the
    pool, then drains of buckets 1 and 2) while repeat buyers race. Every
    user ends with exactly 2, every refusal is limit_reached (20 units stay
    unsold: never sold_out), and the units conserve."""
    await make_sale(scripts, 220, 3, limit=2)
    users = users_of_bucket(0, 3, 100, prefix="rb")
    calls = [u for _ in range(4) for u in users]
    results = await asyncio.gather(*(scripts.admit(SALE, u, 1) for u in calls))
    held: Counter[str] = Counter()
    refusals: Counter[Admit] = Counter()
    for user, r in zip(calls, results, strict=True):
        if r.outcome is Admit.OK:
            held[user] += 1
        else:
            refusals[r.outcome] += 1
    assert held == dict.fromkeys(users, 2), held
    assert refusals == {Admit.LIMIT_REACHED: 200}, refusals
    tags = await scripts.route(SALE)
    assert tags is not None
    assert await redis.hgetall(keys.units(tags[0])) == dict.fromkeys(users, "2")
    report = await check_buckets(redis, SALE)
    assert report.ok and report.available == 20, report.problems


async def test_a_process_that_dies_before_the_credit_loses_no_unit(
    scripts: Scripts, redis: Redis
) -> None:
    """``Scripts.transfer`` runs take, credit, ack in that order: a process
    that dies after the take (its credit never sent) leaves the transfer
    outstanding with its units in flight, and the reconciler credits them.
    Acknowledged before the credit, they would be nowhere."""
    await make_sale(scripts, 60, 3, limit=1)
    tags = await scripts.route(SALE)
    assert tags is not None

    class Died(Exception):
        pass

    async def dies(**_: object) -> None:
        raise Died

    credit = scripts._credit
    scripts._credit = dies  # type: ignore[assignment]
    try:
        with contextlib.suppress(Died):
            await scripts.transfer(SALE, tags[0], 7, xid="dying")
    finally:
        scripts._credit = credit
    report = await check_buckets(redis, SALE)
    assert report.ok and report.outstanding == 1 and report.in_flight == 7, report.problems
    assert await scripts.reconcile(SALE) == 1
    report = await check_buckets(redis, SALE)
    assert report.ok and report.outstanding == 0 and report.available == 60, report.problems
    assert await redis.zscore(keys.xfer_in(tags[0]), "dying") is not None
