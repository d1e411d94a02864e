"""seckill.tools.invariants and ``python -m loadtest.check``: a clean state passes, each
breach of docs/API.md §6 fails under its own name, with the numbers."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from seckill.pipeline.consumer import GROUP
from seckill.process.procs import free_port
from seckill.redis import keys
from seckill.redis.scripts import Admit, Cancel, SalePut, Scripts, bucket_of_user
from seckill.tools.invariants import (
    ADMIN_ONLY_NOTE,
    BATCH,
    Check,
    CheckError,
    admin_checks,
    check_buckets,
    check_sale,
    load_orders,
)
from tests.helpers.api import ADMIN, ADMIN_TOKEN, create_sale

ROOT = Path(__file__).resolve().parents[2]
SALE = "inv"
NAMES = [
    "never_oversold",
    "per_user_limit",
    "every_order_final",
    "counts_consistent",
    "sink_exactly_once",
    "sink_within_sold",
]

SINK_SCHEMA = """CREATE TABLE orders (
    order_id TEXT {pk}, sale_id TEXT NOT NULL, user_id TEXT NOT NULL,
    quantity INTEGER NOT NULL, created_at TEXT NOT NULL, confirmed_at TEXT NOT NULL)"""


@dataclass
class State:
    """Order ids of the hand-built sale, by what happened to them."""

    confirmed: list[str]  # u1 (2 units), u2 (1)
    failed: str  # u3: delivery failed, stock back
    cancelled_queued: str  # u4: cancelled before delivery
    cancelled_confirmed: str  # u5: confirmed, then cancelled (so it is in the sink)
    sink: Path


def write_sink(
    path: Path, rows: list[tuple[str, str, str, int]], *, primary_key: bool = True
) -> None:
    with sqlite3.connect(path) as db:
        db.execute(SINK_SCHEMA.format(pk="PRIMARY KEY" if primary_key else ""))
        db.executemany(
            "INSERT INTO orders VALUES (?, ?, ?, ?, '2026-01-01T00:00Z', '2026-01-01T00:01Z')",
            rows,
        )
    # sqlite3's context manager commits but does not close
    sqlite3.connect(path).close()


@pytest.fixture
async def state(redis: Redis, scripts: Scripts, tmp_path: Path) -> State:
    """stock 10, per_user_limit 2; every order final; a sink that agrees."""
    put = await scripts.sale_put(SALE, {"stock": 10, "per_user_limit": 2})
    assert put.outcome is SalePut.CREATED
    ids = {}
    for user, qty in (("u1", 2), ("u2", 1), ("u3", 1), ("u4", 1), ("u5", 1)):
        result = await scripts.admit(SALE, user, qty)
        assert result.outcome is Admit.OK
        ids[user] = result.order_id
    await redis.xgroup_create(keys.stream(SALE), GROUP, id="0")
    [[_, entries]] = await redis.xreadgroup(GROUP, "c", {keys.stream(SALE): ">"})
    entry = {fields["order_id"]: entry_id for entry_id, fields in entries}
    for user in ("u1", "u2", "u5"):
        assert await scripts.confirm(SALE, ids[user], GROUP, entry[ids[user]])
    assert await scripts.release(SALE, ids["u3"], GROUP, entry[ids["u3"]])
    for user in ("u4", "u5"):
        outcome, _ = await scripts.cancel(SALE, ids[user])
        assert outcome is Cancel.CANCELLED
    sink = tmp_path / "orders.db"
    write_sink(sink, [(ids[u], SALE, u, q) for u, q in (("u1", 2), ("u2", 1), ("u5", 1))])
    return State([ids["u1"], ids["u2"]], ids["u3"], ids["u4"], ids["u5"], sink)


async def run(redis: Redis, state: State, *, require_drained: bool = True) -> dict[str, Check]:
    checks = await check_sale(
        redis, SALE, sink_url=f"sqlite:///{state.sink}", require_drained=require_drained
    )
    return {c.name: c for c in checks}


def failing(checks: dict[str, Check]) -> list[str]:
    return [name for name, c in checks.items() if not c.ok]


async def test_a_clean_state_passes_every_check(redis: Redis, state: State) -> None:
    checks = await run(redis, state)
    assert list(checks) == NAMES
    assert failing(checks) == [], [c.line() for c in checks.values()]
    assert checks["never_oversold"].detail == (
        "stock_total 10, stock_left 7; 2 queued|confirmed|undetermined|paid orders hold 3 units"
    )
    assert "the most 2; units hash agrees" in checks["per_user_limit"].detail
    assert checks["counts_consistent"].detail == (
        "queued 0, confirmed 2, failed 1, cancelled 2, undetermined 0, paid 0, expired 0"
    )
    assert checks["sink_within_sold"].detail.startswith(
        "the sink holds 3 units in 2 rows (not cancelled); stock_total − stock_left = 3"
    )
    # confirmed, then cancelled: in the sink, reported but not a failure
    assert "1 cancelled order(s) also in the sink" in checks["sink_exactly_once"].detail
    assert checks["sink_exactly_once"].line().startswith("PASS sink_exactly_once: 2 confirmed")


async def test_without_require_drained_or_sink_those_checks_are_left_out(
    redis: Redis, state: State
) -> None:
    checks = await check_sale(redis, SALE)
    assert [c.name for c in checks] == ["never_oversold", "per_user_limit", "counts_consistent"]
    assert all(c.ok for c in checks)


async def test_stock_left_out_of_step_with_the_orders_is_oversold(
    redis: Redis, state: State
) -> None:
    await redis.hincrby(keys.sale(SALE), "stock_left", -1)
    checks = await run(redis, state)
    assert failing(checks) == ["never_oversold"]
    assert "orders hold 3 units but stock_total − stock_left = 4" in checks["never_oversold"].detail


async def test_negative_stock_left_is_oversold(redis: Redis, state: State) -> None:
    await redis.hset(keys.sale(SALE), "stock_left", -1)
    checks = await run(redis, state)
    assert not checks["never_oversold"].ok
    assert checks["never_oversold"].detail.startswith("stock_left -1 < 0")


async def test_an_extra_confirmed_order_is_oversold_and_miscounted(
    redis: Redis, state: State
) -> None:
    extra = f"{SALE}.EXTRAEXTRAEXTRA0"
    await redis.hset(
        keys.order(SALE, extra),
        mapping={
            "order_id": extra,
            "sale_id": SALE,
            "user_id": "u9",
            "quantity": 1,
            "status": "confirmed",
            "created_at": 0,
        },
    )
    checks = await run(redis, state)
    assert "orders hold 4 units but stock_total − stock_left = 3" in checks["never_oversold"].detail
    assert "n_confirmed 2 ≠ 3 confirmed orders" in checks["counts_consistent"].detail
    assert "u9 hash 0 orders 1" in checks["per_user_limit"].detail  # not in the units hash
    assert f"1 confirmed order(s) missing: {extra}" in checks["sink_exactly_once"].detail
    assert failing(checks) == [
        "never_oversold",
        "per_user_limit",
        "counts_consistent",
        "sink_exactly_once",
    ]


async def test_a_user_over_the_limit_is_named(redis: Redis, state: State) -> None:
    # A third unit for u1 (limit 2), with stock, units and counters all in step:
    # only the per-user invariant breaks.
    extra = f"{SALE}.OVERLIMITOVERLIM"
    await redis.hset(
        keys.order(SALE, extra),
        mapping={
            "order_id": extra,
            "sale_id": SALE,
            "user_id": "u1",
            "quantity": 1,
            "status": "queued",
            "created_at": 0,
        },
    )
    for field, by in (("stock_left", -1), ("n_queued", 1)):
        await redis.hincrby(keys.sale(SALE), field, by)
    await redis.hincrby(keys.units(SALE), "u1", 1)
    checks = await run(redis, state, require_drained=False)
    assert failing(checks) == ["per_user_limit"]
    assert "1 user(s) over the limit: u1 holds 3" in checks["per_user_limit"].detail


async def test_a_units_hash_that_disagrees_with_the_orders_fails(
    redis: Redis, state: State
) -> None:
    await redis.hset(keys.units(SALE), "u2", 5)
    checks = await run(redis, state)
    assert failing(checks) == ["per_user_limit"]
    assert "units hash disagrees with the orders for 1 user(s): u2 hash 5 orders 1" in (
        checks["per_user_limit"].detail
    )


async def test_an_order_stuck_in_queued_fails_only_when_drained_is_required(
    redis: Redis, scripts: Scripts, state: State
) -> None:
    stuck = await scripts.admit(SALE, "u6", 1)
    assert stuck.outcome is Admit.OK
    assert failing(await run(redis, state, require_drained=False)) == []
    checks = await run(redis, state)
    assert failing(checks) == ["every_order_final"]
    assert checks["every_order_final"].detail == f"1 of 6 orders still queued: {stuck.order_id}"


async def test_counters_out_of_step_with_the_orders_fail(redis: Redis, state: State) -> None:
    await redis.hincrby(keys.sale(SALE), "n_failed", 1)
    await redis.hincrby(keys.sale(SALE), "n_queued", 2)
    checks = await run(redis, state)
    assert failing(checks) == ["counts_consistent"]
    detail = checks["counts_consistent"].detail
    assert "n_failed 2 ≠ 1 failed orders" in detail
    assert "n_queued 2 ≠ 0 queued orders" in detail


async def test_a_malformed_order_hash_fails_counts(redis: Redis, state: State) -> None:
    bad = f"{SALE}.MALFORMEDMALFORM"
    await redis.hset(keys.order(SALE, bad), mapping={"order_id": bad, "status": "shipped"})
    checks = await run(redis, state)
    assert failing(checks) == ["counts_consistent"]
    assert f"1 malformed order hash(es): {bad}" in checks["counts_consistent"].detail


async def test_a_sink_missing_a_confirmed_order_fails(redis: Redis, state: State) -> None:
    with sqlite3.connect(state.sink) as db:
        db.execute("DELETE FROM orders WHERE order_id = ?", (state.confirmed[1],))
    sqlite3.connect(state.sink).close()
    checks = await run(redis, state)
    assert failing(checks) == ["sink_exactly_once"]
    assert f"1 confirmed order(s) missing: {state.confirmed[1]}" in (
        checks["sink_exactly_once"].detail
    )


async def test_a_sink_holding_an_order_twice_fails(
    redis: Redis, state: State, tmp_path: Path
) -> None:
    state.sink = tmp_path / "twice.db"
    rows = [(state.confirmed[0], SALE, "u1", 2), (state.confirmed[1], SALE, "u2", 1)]
    write_sink(state.sink, [*rows, rows[1]], primary_key=False)
    checks = await run(redis, state)
    assert failing(checks) == ["sink_exactly_once", "sink_within_sold"]
    assert f"1 order(s) more than once: {state.confirmed[1]}" in checks["sink_exactly_once"].detail
    assert "the sink holds 1 unit(s) more than sold" in checks["sink_within_sold"].detail


async def test_a_sink_holding_more_units_than_sold_fails(
    redis: Redis, state: State, tmp_path: Path
) -> None:
    """The backend got a unit twice (an order released while the sink had it):
    more units than sold, and one user over the limit."""
    state.sink = tmp_path / "over.db"
    write_sink(
        state.sink,
        [
            (state.confirmed[0], SALE, "u1", 2),
            (state.confirmed[1], SALE, "u2", 1),
            (state.failed, SALE, "u1", 1),  # released, yet written
            (state.cancelled_confirmed, SALE, "u5", 1),  # cancelled: left out
        ],
    )
    check = (await run(redis, state))["sink_within_sold"]
    assert not check.ok
    assert check.detail.startswith(
        "the sink holds 1 unit(s) more than sold; 1 user(s) over the limit in the sink:"
        " u1 holds 3 (the sink holds 4 units in 3 rows (not cancelled)"
    ), check.detail


async def test_a_sink_row_unknown_to_redis_or_failed_or_wrong_fails(
    redis: Redis, state: State, tmp_path: Path
) -> None:
    state.sink = tmp_path / "odd.db"
    ghost = f"{SALE}.GHOSTGHOSTGHOST0"
    write_sink(
        state.sink,
        [
            (state.confirmed[0], SALE, "u1", 1),  # Redis says 2 units
            (state.confirmed[1], SALE, "u2", 1),
            (ghost, SALE, "u7", 1),
            (state.failed, SALE, "u3", 1),  # its stock went back
            ("other.AAAAAAAAAAAAAAAA", "other", "u1", 1),  # another sale: not looked at
        ],
    )
    detail = (await run(redis, state))["sink_exactly_once"].detail
    assert f"1 row(s) unknown to Redis: {ghost}" in detail
    assert f"1 failed order(s) in the sink: {state.failed}" in detail
    assert f"1 row(s) disagree with their order: {state.confirmed[0]}" in detail
    assert "4 sink rows" in detail


async def test_a_missing_sale_or_sink_is_an_error_not_a_verdict(
    redis: Redis, state: State, tmp_path: Path
) -> None:
    with pytest.raises(CheckError, match="no sale 'nope'"):
        await check_sale(redis, "nope")
    with pytest.raises(CheckError, match="no SQLite sink at"):
        await check_sale(redis, SALE, sink_url=f"sqlite:///{tmp_path / 'none.db'}")
    with pytest.raises(CheckError, match="sqlite:///PATH"):
        await check_sale(redis, SALE, sink_url="http://example.invalid/hook")


async def test_thousands_of_orders_are_scanned_in_batches(redis: Redis, scripts: Scripts) -> None:
    n = 2 * BATCH + 500
    await scripts.sale_put("big", {"stock": n + 10})
    # a neighbour sale whose keys the pattern must not pick up
    await scripts.sale_put("big2", {"stock": 5})
    results = await asyncio.gather(
        *(scripts.admit("big", f"u{i}", 1) for i in range(n)),
        *(scripts.admit("big2", f"u{i}", 1) for i in range(5)),
    )
    assert all(r.outcome is Admit.OK for r in results)
    orders = await load_orders(redis, "big")
    assert len(orders) == n
    checks = {c.name: c for c in await check_sale(redis, "big")}
    assert all(c.ok for c in checks.values())
    assert (
        f"{n} queued|confirmed|undetermined|paid orders hold {n} units"
        in checks["never_oversold"].detail
    )


# -- the admin-API view ------------------------------------------------------


def view(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "stock_total": 10,
        "stock_left": 7,
        "per_user_limit": 1,
        "orders": {"queued": 0, "confirmed": 3, "failed": 1, "cancelled": 0, "undetermined": 0},
        "backlog": 0,
    }
    return {**base, **changes}


def test_admin_checks_pass_on_a_consistent_view() -> None:
    checks = admin_checks(view(), require_drained=True)
    assert [c.name for c in checks] == [
        "stock_left_nonnegative",
        "sold_matches_orders",
        "counts_nonnegative",
        "backlog_matches_queued",
        "every_order_final",
    ]
    assert all(c.ok for c in checks), [c.line() for c in checks]


@pytest.mark.parametrize(
    ("changes", "name"),
    [
        ({"stock_left": -1, "stock_total": 2}, "stock_left_nonnegative"),
        ({"stock_left": 6}, "sold_matches_orders"),  # 4 sold, 3 orders of 1 unit
        (
            {
                "orders": {
                    "queued": -1,
                    "confirmed": 3,
                    "failed": 0,
                    "cancelled": 0,
                    "undetermined": 0,
                }
            },
            "counts_nonnegative",
        ),
        ({"backlog": 2}, "backlog_matches_queued"),
    ],
)
def test_admin_checks_name_the_breach(changes: dict[str, object], name: str) -> None:
    checks = admin_checks(view(**changes))
    assert name in [c.name for c in checks if not c.ok]


def test_admin_checks_with_a_limit_allow_a_range_and_require_drained() -> None:
    queued = {"queued": 1, "confirmed": 2, "failed": 0, "cancelled": 0, "undetermined": 0}
    checks = {c.name: c for c in admin_checks(view(per_user_limit=2, orders=queued, backlog=1))}
    assert checks["sold_matches_orders"].ok  # 3 units over 3 orders of 1..2
    assert "allow 3..6" in checks["sold_matches_orders"].detail
    final = admin_checks(view(orders=queued, backlog=1, stock_left=7), require_drained=True)
    assert [c.name for c in final if not c.ok] == ["every_order_final"]


# -- python -m loadtest.check ------------------------------------------------


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECKILL_")}
    return {**env, **extra}


async def checker(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "loadtest.check",
        *args,
        cwd=ROOT,
        env=env or clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_checker_passes_a_clean_sale_and_fails_a_breach(
    redis: Redis, redis_url: str, state: State
) -> None:
    args = ["--sale", SALE, "--redis-url", redis_url, "--sink", f"sqlite:///{state.sink}"]
    code, out, err = await checker(*args, "--require-drained")
    assert (code, err) == (0, ""), out + err
    lines = out.splitlines()
    assert [ln.split(":")[0] for ln in lines] == [f"PASS {name}" for name in NAMES]

    await redis.hincrby(keys.sale(SALE), "stock_left", -1)
    code, out, err = await checker(*args)
    assert code == 1, out + err
    assert out.splitlines()[0].startswith("FAIL never_oversold: orders hold 3 units")
    assert "PASS per_user_limit:" in out


async def test_checker_waits_for_the_drain_then_requires_it(
    redis: Redis, redis_url: str, scripts: Scripts, state: State
) -> None:
    await scripts.admit(SALE, "u6", 1)  # nobody will deliver it
    code, out, _ = await checker("--sale", SALE, "--redis-url", redis_url, "--wait-drained", "0.2")
    assert code == 1
    assert "FAIL every_order_final: 1 of 6 orders still queued" in out


async def test_checker_usage_and_unreachable_are_exit_2_with_one_line(
    redis: Redis, redis_url: str, state: State
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    cases = [
        (["--redis-url", redis_url], "Missing option '--sale'"),
        (["--sale", "nope", "--redis-url", redis_url], "no sale 'nope'"),
        (["--sale", "bad id!", "--redis-url", redis_url], "not a valid sale id"),
        (["--sale", SALE, "--redis-url", dead], "cannot check through Redis"),
        (["--sale", SALE, "--redis-url", redis_url, "--sink", "x.db"], "sqlite:///PATH"),
        (["--sale", SALE, "--url", f"http://127.0.0.1:{free_port()}"], "admin token is needed"),
        (["--sale", SALE, "--sink", f"sqlite:///{state.sink}"], "--sink needs --redis-url"),
    ]
    results = await asyncio.gather(*(checker(*args) for args, _ in cases))
    for (args, message), (code, out, err) in zip(cases, results, strict=True):
        assert code == 2, (args, out, err)
        assert out == ""
        assert len(err.strip().splitlines()) == 1, err
        assert message in err, (args, err)


async def test_checker_through_the_admin_api_only(client: TestClient) -> None:
    await create_sale(client, "adm", stock=3)
    resp = await client.post("/api/v1/sales/adm/orders", headers={"X-User-Id": "u1"})
    assert resp.status == 202
    url = str(client.make_url("")).rstrip("/")
    env = clean_env(SECKILL_ADMIN_TOKEN=ADMIN_TOKEN)
    # the app's own pipeline delivers the order; --wait-drained waits for it
    code, out, err = await checker("--url", url, "--sale", "adm", "--wait-drained", "20", env=env)
    assert (code, err) == (0, ""), out + err
    lines = out.splitlines()
    assert all(ln.startswith("PASS ") for ln in lines[:-1]), out
    assert "PASS every_order_final: queued 0, backlog 0" in lines
    assert lines[-1] == f"NOTE {ADMIN_ONLY_NOTE}"
    view_now = await (await client.get("/admin/v1/sales/adm", headers=ADMIN)).json()
    assert view_now["orders"]["confirmed"] == 1

    bad = clean_env(SECKILL_ADMIN_TOKEN="wrong-token-0123456789")
    code, out, err = await checker("--url", url, "--sale", "adm", env=bad)
    assert code == 2 and out == "" and "unauthenticated" in err, (out, err)
    code, _, err = await checker("--url", url, "--sale", "nope", env=env)
    assert code == 2 and "sale_not_found" in err, err


# -- a sale with buckets: the checks only it has ----------------------------------------------

BUCKETED = "invb"


@pytest.fixture
async def buckets(redis: Redis, scripts: Scripts) -> tuple[str, ...]:
    """stock 30 on 3 buckets, six buyers of one unit: a clean state; its tags."""
    put = await scripts.sale_put(BUCKETED, {"stock": 30, "per_user_limit": 1, "buckets": 3})
    assert put.outcome is SalePut.CREATED
    for i in range(6):
        assert (await scripts.admit(BUCKETED, f"b{i}", 1)).outcome is Admit.OK
    report = await check_buckets(redis, BUCKETED)
    assert report.ok and report.available == 24, report.problems
    tags = await scripts.route(BUCKETED)
    assert tags is not None
    return tags


async def test_units_held_in_another_bucket_than_the_users_fail(
    redis: Redis, buckets: tuple[str, ...]
) -> None:
    """A user's units in a bucket other than crc32(user) mod N: the per-user
    limit was not decided by one script."""
    k = bucket_of_user("b0", 3)
    wrong = buckets[(k + 1) % 3]
    await redis.hdel(keys.units(buckets[k]), "b0")
    await redis.hset(keys.units(wrong), "b0", 1)
    report = await check_buckets(redis, BUCKETED)
    failed = [c for c in report.checks if not c.ok]
    assert [c.name for c in failed] == ["user_in_one_bucket"]
    assert "b0 in bucket" in failed[0].detail


async def test_a_place_below_zero_fails_even_when_the_sum_holds(
    redis: Redis, buckets: tuple[str, ...]
) -> None:
    """A bucket at -1 and one unit too many in the pool: the sum is right, the
    sale is oversold in that bucket."""
    left = int(await redis.hget(keys.sale(buckets[0]), "stock_left"))  # type: ignore[arg-type]
    await redis.hincrby(keys.sale(buckets[0]), "stock_left", -(left + 1))
    await redis.hincrby(keys.sale(BUCKETED), "pool", left + 1)
    report = await check_buckets(redis, BUCKETED)
    assert report.available == 24
    assert [c.name for c in report.checks if not c.ok] == ["buckets_conserve"]


async def test_units_in_flight_count_and_a_credit_twice_fails(
    redis: Redis, scripts: Scripts, buckets: tuple[str, ...]
) -> None:
    """A transfer cut after its take holds its units in flight (counted: the
    sale conserves); a credit applied without a take creates units."""
    amount, _, _, state = await scripts.take(BUCKETED, buckets[1], 4, xid="cut")
    assert (amount, state) == (4, 0)
    report = await check_buckets(redis, BUCKETED)
    assert report.ok and report.in_flight == 4 and report.available == 24, report.problems
    await scripts.finish(BUCKETED, buckets[1], "cut", 4)
    report = await check_buckets(redis, BUCKETED)
    assert report.ok and report.in_flight == 0 and report.outstanding == 0
    await scripts.finish(BUCKETED, buckets[2], "forged", 3)  # units from nowhere
    report = await check_buckets(redis, BUCKETED)
    assert report.available == 27
    assert [c.name for c in report.checks if not c.ok] == ["buckets_conserve"]
