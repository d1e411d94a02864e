"""The invariants of docs/API.md §6, checked against a sale's state after (or during) a run.

Two ways to look:

- :func:`check_sale` reads Redis directly: the sale hash, every order hash of
  the sale (SCAN + pipelined HGETALL, so 100k orders take seconds), the units
  hash, and optionally the SQLite sink. It proves the invariants from the
  orders themselves, not from the counters that the Lua scripts keep beside
  them — a counter that drifted from its orders is itself a finding.
- :func:`admin_checks` sees only ``GET /admin/v1/sales/{id}`` (for a gateway
  whose Redis is out of reach): it can prove less, and says so.

Each check is a :class:`Check` with the numbers behind its verdict in ``detail``.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from redis.asyncio import Redis

from seckill.pipeline.sinks import safe_url
from seckill.redis import keys
from seckill.schemas import ORDER_STATUSES
from seckill.tools.admin_client import AdminClientError, call

#: statuses whose units count as sold (held by their user): an undetermined
#: order keeps its stock until an operator settles it; a paid one for good.
HOLDING = ("queued", "confirmed", "undetermined", "paid")
#: statuses of orders the sink was given (an expired or paid order was
#: confirmed first; issue 15)
DELIVERED = ("confirmed", "paid", "expired")
#: keys per SCAN step and per pipelined batch of HGETALLs.
BATCH = 1000
#: how many offending ids a detail names before "…".
SHOWN = 3


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'} {self.name}: {self.detail}"


class CheckError(Exception):
    """The checks cannot run (no such sale, unreachable, unreadable sink); one line."""


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def _some(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN])
    return shown + (f", … ({len(items)} in all)" if len(items) > SHOWN else "")


async def load_orders(redis: Redis, sale_id: str) -> dict[str, dict[str, str]]:
    """Every order hash of *sale_id*, by order id (from the key, not the hash)."""
    prefix = keys.order(sale_id, "")
    pattern = _glob_escape(prefix) + "*"
    orders: dict[str, dict[str, str]] = {}
    batch: list[str] = []

    async def fetch(names: list[str]) -> None:
        pipe = redis.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(name)
        for name, fields in zip(names, await pipe.execute(), strict=True):
            if fields:  # gone between SCAN and HGETALL: not an order any more
                orders[name[len(prefix) :]] = fields

    seen: set[str] = set()
    async for name in redis.scan_iter(match=pattern, count=BATCH):
        if name in seen:  # SCAN may return a key twice
            continue
        seen.add(name)
        batch.append(name)
        if len(batch) >= BATCH:
            await fetch(batch)
            batch = []
    if batch:
        await fetch(batch)
    return orders


async def load_sale_orders(redis: Redis, sale_id: str) -> dict[str, dict[str, str]]:
    """Every order hash of a sale, from every bucket of a sale with buckets."""
    tags: str | None = await redis.hget(keys.sale(sale_id), "tags")  # type: ignore[misc, assignment]
    orders: dict[str, dict[str, str]] = {}
    for owner in tags.split() if tags else [sale_id]:
        orders.update(await load_orders(redis, owner))
    return orders


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


async def check_sale(
    redis: Redis,
    sale_id: str,
    *,
    sink_url: str | None = None,
    require_drained: bool = False,
) -> list[Check]:
    """Run every check on *sale_id*; CheckError when the sale does not exist.

    A sale with buckets is checked as one: its orders and units from every
    bucket, its stock_left = pool + the buckets' stock + units in flight
    (:func:`check_buckets`, which adds the checks of its own)."""
    sale: dict[str, str] = await redis.hgetall(keys.sale(sale_id))  # type: ignore[assignment]
    if not sale:
        raise CheckError(f"no sale {sale_id!r} in Redis")
    extra: list[Check] = []
    if "buckets" in sale:
        report = await check_buckets(redis, sale_id)
        sale = report.sale
        orders, units = report.orders, report.units
        extra = report.checks
    else:
        orders = await load_orders(redis, sale_id)
        units = await redis.hgetall(keys.units(sale_id))  # type: ignore[assignment]

    # One pass over the orders; a hash that is not a well-formed order is a
    # finding of its own (counts_consistent), and is left out of the sums.
    by_status: Counter[str] = Counter()
    held: Counter[str] = Counter()
    sold = 0
    malformed: list[str] = []
    for order_id, o in orders.items():
        status, qty, user = o.get("status"), _int(o.get("quantity")), o.get("user_id")
        if (
            status not in ORDER_STATUSES
            or qty is None
            or qty < 1
            or not user
            or o.get("order_id") != order_id
            or o.get("sale_id") != sale_id
        ):
            malformed.append(order_id)
            continue
        by_status[status] += 1
        if status in HOLDING:
            sold += qty
            held[user] += qty

    checks = [
        _never_oversold(sale, sold, by_status),
        _per_user_limit(sale, held, units),
    ]
    if require_drained:
        queued = sorted(i for i, o in orders.items() if o.get("status") == "queued")
        checks.append(_every_order_final(queued, len(orders)))
        if sale.get("pay_window_s"):
            checks.append(_pay_window_settled(orders))
    checks.append(_counts_consistent(sale, by_status, malformed))
    checks.extend(extra)
    if sink_url is not None:
        rows = await read_sink_rows(sink_url, sale_id)
        checks.append(_sink_exactly_once(sink_url, rows, sale_id, orders))
        released = {i for i, o in orders.items() if o.get("status") in ("cancelled", "expired")}
        checks.append(sink_within_sold(rows, sale, released))
        statuses = await read_sink_statuses(sink_url, sale_id)
        if statuses is not None:  # None: a table from before issue 15, never migrated
            checks.append(sink_statuses_match(statuses, orders))
    return checks


@dataclass(slots=True)
class BucketReport:
    """A sale with buckets, read as one (:func:`check_buckets`)."""

    #: the home hash, with stock_left = :attr:`available` and the buckets'
    #: order counters summed
    sale: dict[str, str]
    orders: dict[str, dict[str, str]]
    #: user -> units, from every bucket's units hash
    units: dict[str, str]
    pool: int
    bucket_stock: list[int]
    #: units taken from a source and not credited to their destination yet
    in_flight: int
    #: transfers taken and not acknowledged (credited or not)
    outstanding: int
    checks: list[Check]

    @property
    def available(self) -> int:
        return self.pool + sum(self.bucket_stock) + self.in_flight

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def problems(self) -> list[str]:
        return [c.line() for c in self.checks if not c.ok]


async def check_buckets(redis: Redis, sale_id: str) -> BucketReport:
    """Read a sale with buckets from Redis and check what only it has:

    - ``buckets_conserve``: pool + Σ bucket stock + units in flight =
      stock_total − units held by its orders, no place below 0;
    - ``user_in_one_bucket``: each user's units are in the bucket of
      crc32(user) mod N (so the per-user limit was decided in one script);
    - ``bucket_counts``: each bucket's counters match its own orders.
    """
    import zlib

    sale: dict[str, str] = await redis.hgetall(keys.sale(sale_id))  # type: ignore[assignment]
    if not sale or "buckets" not in sale:
        raise CheckError(f"no sale {sale_id!r} with buckets in Redis")
    tags = sale.get("tags", "").split()
    owners = [sale_id, *tags]
    pipe = redis.pipeline(transaction=False)
    for tag in tags:
        pipe.hgetall(keys.sale(tag))
        pipe.hgetall(keys.units(tag))
    for owner in owners:
        pipe.hgetall(keys.xfer_out(owner))
    rows: list[Any] = await pipe.execute()
    bucket_hashes: list[dict[str, str]] = rows[0 : 2 * len(tags) : 2]
    bucket_units: list[dict[str, str]] = rows[1 : 2 * len(tags) : 2]
    outs: list[tuple[str, str, int]] = []
    for row in rows[2 * len(tags) :]:
        for xid, record in row.items():
            dest, amount, _ = record.split(" ")
            outs.append((xid, dest, int(amount)))
    in_flight = 0
    for xid, dest, amount in outs:
        if await redis.zscore(keys.xfer_in(dest), xid) is None:
            in_flight += amount

    orders: dict[str, dict[str, str]] = {}
    units: dict[str, str] = {}
    checks: list[Check] = []
    misplaced: list[str] = []
    count_problems: list[str] = []
    bucket_held = []
    for k, (tag, bucket, held_units) in enumerate(
        zip(tags, bucket_hashes, bucket_units, strict=True)
    ):
        mine = await load_orders(redis, tag)
        orders.update(mine)
        by_status = Counter(o.get("status") for o in mine.values())
        for status in ORDER_STATUSES:
            counter = _int(bucket.get(f"n_{status}")) or 0
            if counter != by_status[status]:
                count_problems.append(f"{tag} n_{status} {counter} ≠ {by_status[status]}")
        bucket_held.append(
            sum(_int(o.get("quantity")) or 0 for o in mine.values() if o.get("status") in HOLDING)
        )
        for user, n in held_units.items():
            if zlib.crc32(user.encode()) % len(tags) != k:
                misplaced.append(f"{user} in bucket {k}")
            units[user] = str((_int(units.get(user)) or 0) + (_int(n) or 0))
    pool = _int(sale.get("pool")) or 0
    stock = [_int(b.get("stock_left")) or 0 for b in bucket_hashes]
    total = _int(sale.get("stock_total")) or 0
    held = sum(bucket_held)
    available = pool + sum(stock) + in_flight
    facts = (
        f"pool {pool} + buckets {'+'.join(map(str, stock))} + in flight {in_flight}"
        f" = {available}; stock_total {total} − held {held} = {total - held};"
        f" {len(outs)} transfer(s) outstanding"
    )
    negative = pool < 0 or min(stock, default=0) < 0
    checks.append(
        Check(
            "buckets_conserve",
            available == total - held and not negative and len(bucket_hashes) == len(tags),
            facts,
        )
    )
    checks.append(
        Check(
            "user_in_one_bucket",
            not misplaced,
            f"{len(units)} users, each in the bucket of crc32(user) mod {len(tags)}"
            if not misplaced
            else f"{len(misplaced)} misplaced: {_some(misplaced)}",
        )
    )
    checks.append(
        Check(
            "bucket_counts",
            not count_problems,
            "every bucket's counters match its orders"
            if not count_problems
            else "; ".join(count_problems),
        )
    )
    merged = dict(sale)
    merged["stock_left"] = str(available)
    for status in ORDER_STATUSES:
        merged[f"n_{status}"] = str(sum(_int(b.get(f"n_{status}")) or 0 for b in bucket_hashes))
    return BucketReport(merged, orders, units, pool, stock, in_flight, len(outs), checks)


def _never_oversold(sale: dict[str, str], sold: int, by_status: Counter[str]) -> Check:
    total, left = _int(sale.get("stock_total")), _int(sale.get("stock_left"))
    n = sum(by_status[s] for s in HOLDING)
    if total is None or left is None:
        return Check("never_oversold", False, "the sale hash has no stock_total/stock_left")
    facts = (
        f"stock_total {total}, stock_left {left}; {n} {'|'.join(HOLDING)} orders hold {sold} units"
    )
    if left < 0:
        return Check("never_oversold", False, f"stock_left {left} < 0 ({facts})")
    if sold != total - left:
        return Check(
            "never_oversold",
            False,
            f"orders hold {sold} units but stock_total − stock_left = {total - left} ({facts})",
        )
    return Check("never_oversold", True, facts)


def _per_user_limit(sale: dict[str, str], held: Counter[str], units: dict[str, str]) -> Check:
    limit = _int(sale.get("per_user_limit"))
    if limit is None:
        return Check("per_user_limit", False, "the sale hash has no per_user_limit")
    over = sorted(u for u, n in held.items() if n > limit)
    # The units hash is what admit.lua decides by; cancel/release delete an
    # entry that reaches 0, so absent and "0" both mean nothing held.
    recorded = {u: n for u, n in ((u, _int(v)) for u, v in units.items()) if n != 0}
    disagree = sorted(u for u in set(recorded) | set(held) if recorded.get(u) != held.get(u))
    most = max(held.values(), default=0)
    facts = f"per_user_limit {limit}; {len(held)} users hold units, the most {most}"
    problems = []
    if over:
        problems.append(
            f"{len(over)} user(s) over the limit: " + _some([f"{u} holds {held[u]}" for u in over])
        )
    if disagree:
        problems.append(
            f"units hash disagrees with the orders for {len(disagree)} user(s): "
            + _some([f"{u} hash {recorded.get(u, 0)} orders {held.get(u, 0)}" for u in disagree])
        )
    if problems:
        return Check("per_user_limit", False, "; ".join(problems) + f" ({facts})")
    return Check("per_user_limit", True, f"{facts}; units hash agrees")


def _every_order_final(queued: list[str], n_orders: int) -> Check:
    if queued:
        return Check(
            "every_order_final",
            False,
            f"{len(queued)} of {n_orders} orders still queued: {_some(queued)}",
        )
    return Check("every_order_final", True, f"none of {n_orders} orders queued")


def _pay_window_settled(orders: dict[str, dict[str, str]]) -> Check:
    """After the window (issue 15): every confirmed order was paid or expired,
    and each expired one returned its units (counted by never_oversold)."""
    waiting = sorted(i for i, o in orders.items() if o.get("status") == "confirmed")
    n = Counter(o.get("status") for o in orders.values())
    facts = f"{n['paid']} paid, {n['expired']} expired"
    if waiting:
        return Check(
            "pay_window_settled",
            False,
            f"{len(waiting)} order(s) still awaiting payment: {_some(waiting)} ({facts})",
        )
    return Check("pay_window_settled", True, facts)


def _counts_consistent(
    sale: dict[str, str], by_status: Counter[str], malformed: list[str]
) -> Check:
    mismatches = []
    for status in ORDER_STATUSES:
        counter = _int(sale.get(f"n_{status}")) or 0
        if counter != by_status[status]:
            mismatches.append(f"n_{status} {counter} ≠ {by_status[status]} {status} orders")
    if malformed:
        mismatches.append(f"{len(malformed)} malformed order hash(es): {_some(sorted(malformed))}")
    counts = ", ".join(f"{s} {by_status[s]}" for s in ORDER_STATUSES)
    if mismatches:
        return Check("counts_consistent", False, "; ".join(mismatches) + f" (orders: {counts})")
    return Check("counts_consistent", True, counts)


def sink_shown(sink_url: str) -> str:
    """The sink as check details name it (a PostgreSQL URL without its password);
    CheckError when it is neither a SQLite nor a PostgreSQL URL."""
    if sink_url.lower().startswith(("postgresql://", "postgres://")):
        return safe_url(urlsplit(sink_url))
    return str(sqlite_path(sink_url))


async def read_sink_rows(sink_url: str, sale_id: str) -> list[tuple[str, str, str, int]]:
    """(order_id, sale_id, user_id, quantity) of every sink row of the sale."""
    if not sink_url.lower().startswith(("postgresql://", "postgres://")):
        return await asyncio.to_thread(read_sink, sqlite_path(sink_url), sale_id)
    import asyncpg

    try:
        conn = await asyncpg.connect(sink_url, timeout=10)
    except Exception as exc:  # refused, auth, no such database, bad DSN
        raise CheckError(
            f"cannot reach the PostgreSQL sink {sink_shown(sink_url)}: {exc}"
        ) from None
    try:
        rows = await conn.fetch(
            "SELECT order_id, sale_id, user_id, quantity FROM orders"
            " WHERE sale_id = $1 OR left(order_id, $2) = $3",
            sale_id,
            len(sale_id) + 1,
            sale_id + ".",
        )
    except asyncpg.PostgresError as exc:
        raise CheckError(f"cannot read table orders of {sink_shown(sink_url)}: {exc}") from None
    finally:
        await conn.close()
    return [(str(a), str(b), str(c), int(d)) for a, b, c, d in rows]


async def read_sink_statuses(sink_url: str, sale_id: str) -> dict[str, str] | None:
    """order id -> the sink's status column, for the sale's rows (issue 15);
    None when the table has no status column (made before, not yet migrated)."""
    if not sink_url.lower().startswith(("postgresql://", "postgres://")):
        return await asyncio.to_thread(_read_sqlite_statuses, sqlite_path(sink_url), sale_id)
    import asyncpg

    try:
        conn = await asyncpg.connect(sink_url, timeout=10)
    except Exception as exc:
        raise CheckError(
            f"cannot reach the PostgreSQL sink {sink_shown(sink_url)}: {exc}"
        ) from None
    try:
        rows = await conn.fetch(
            "SELECT order_id, status FROM orders WHERE left(order_id, $1) = $2",
            len(sale_id) + 1,
            sale_id + ".",
        )
    except asyncpg.UndefinedColumnError:
        return None
    except asyncpg.PostgresError as exc:
        raise CheckError(f"cannot read table orders of {sink_shown(sink_url)}: {exc}") from None
    finally:
        await conn.close()
    return {str(a): str(b) for a, b in rows}


def _read_sqlite_statuses(path: Path, sale_id: str) -> dict[str, str] | None:
    try:
        db = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True, timeout=10)
        try:
            rows = db.execute(
                "SELECT order_id, status FROM orders WHERE substr(order_id, 1, ?) = ?",
                (len(sale_id) + 1, sale_id + "."),
            ).fetchall()
        finally:
            db.close()
    except sqlite3.Error as exc:
        if "no such column" in str(exc):
            return None
        raise CheckError(f"cannot read the status column of {path}: {exc}") from None
    return {str(a): str(b) for a, b in rows}


#: Redis statuses the sink is told about (confirmed is what deliver() writes)
SINK_STATUSES = ("confirmed", "paid", "expired", "cancelled")


def sink_statuses_match(statuses: dict[str, str], orders: dict[str, dict[str, str]]) -> Check:
    """Every sink row's status is its Redis order's (issue 15): paid, expired
    and cancelled after confirmation reach the sink as status events. A row
    whose order hash is gone (retention) is not compared."""
    wrong = sorted(
        f"{i} sink {st} / redis {orders[i].get('status')}"
        for i, st in statuses.items()
        if i in orders
        and orders[i].get("status") in SINK_STATUSES
        and orders[i].get("status") != st
    )
    counts = Counter(statuses.values())
    facts = ", ".join(f"{s} {counts[s]}" for s in SINK_STATUSES if counts[s]) or "no rows"
    if wrong:
        return Check(
            "sink_statuses_match", False, f"{len(wrong)} differ: {_some(wrong)} (sink: {facts})"
        )
    return Check("sink_statuses_match", True, f"sink: {facts}")


def sqlite_path(sink_url: str) -> Path:
    """The file of a ``sqlite:///PATH`` URL (the gateway's own convention)."""
    if not sink_url.lower().startswith("sqlite:///") or len(sink_url) == len("sqlite:///"):
        raise CheckError(
            f"the sink to check must be sqlite:///PATH or postgresql://…, got {sink_url!r}"
        )
    return Path(sink_url[len("sqlite:///") :])


def read_sink(path: Path, sale_id: str) -> list[tuple[str, str, str, int]]:
    """(order_id, sale_id, user_id, quantity) of every row of the sale, read-only."""
    if not path.is_file():
        raise CheckError(f"no SQLite sink at {path}")
    try:
        db = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error as exc:
        raise CheckError(f"cannot open the SQLite sink {path}: {exc}") from None
    try:
        # Rows of this sale by either column: a row whose order id names the
        # sale but whose sale_id does not is still this sale's (and suspect).
        rows = db.execute(
            "SELECT order_id, sale_id, user_id, quantity FROM orders"
            " WHERE sale_id = ? OR substr(order_id, 1, ?) = ?",
            (sale_id, len(sale_id) + 1, sale_id + "."),
        ).fetchall()
    except sqlite3.Error as exc:
        raise CheckError(f"cannot read table orders of {path}: {exc}") from None
    finally:
        db.close()
    return [(str(a), str(b), str(c), int(d)) for a, b, c, d in rows]


def sink_within_sold(
    rows: list[tuple[str, str, str, int]], sale: dict[str, str], cancelled: set[str]
) -> Check:
    """The backend never holds more than was sold: the units of the sale's sink
    rows ≤ stock_total − stock_left, and each user's ≤ per_user_limit. Rows of
    orders an operator cancelled are left out (a cancel returns the stock and
    does not notify the sink, see README); the rest holds whatever Redis forgot."""
    rows = [r for r in rows if r[0] not in cancelled]
    total, left = _int(sale.get("stock_total")), _int(sale.get("stock_left"))
    limit = _int(sale.get("per_user_limit"))
    if total is None or left is None or limit is None:
        return Check("sink_within_sold", False, "the sale hash lacks stock_total/stock_left/limit")
    units = sum(r[3] for r in rows)
    by_user: Counter[str] = Counter()
    for r in rows:
        by_user[r[2]] += r[3]
    over = sorted(u for u, n in by_user.items() if n > limit)
    facts = (
        f"the sink holds {units} units in {len(rows)} rows (not cancelled);"
        f" stock_total − stock_left ="
        f" {total - left}; per_user_limit {limit}, the most one user holds"
        f" {max(by_user.values(), default=0)}"
    )
    problems = []
    if units > total - left:
        problems.append(f"the sink holds {units - (total - left)} unit(s) more than sold")
    if over:
        problems.append(
            f"{len(over)} user(s) over the limit in the sink: "
            + _some([f"{u} holds {by_user[u]}" for u in over])
        )
    if problems:
        return Check("sink_within_sold", False, "; ".join(problems) + f" ({facts})")
    return Check("sink_within_sold", True, facts)


def _sink_exactly_once(
    sink_url: str,
    rows: list[tuple[str, str, str, int]],
    sale_id: str,
    orders: dict[str, dict[str, str]],
) -> Check:
    path = sink_shown(sink_url)
    copies = Counter(r[0] for r in rows)
    confirmed = {i for i, o in orders.items() if o.get("status") in DELIVERED}
    missing = sorted(confirmed - set(copies))
    twice = sorted(i for i, n in copies.items() if n > 1)
    unknown = sorted(i for i in copies if i not in orders)
    status_of = {i: orders[i].get("status") for i in copies if i in orders}
    # A failed order's stock went back and may be sold again: the sink must not have it.
    failed = sorted(i for i, s in status_of.items() if s == "failed")
    wrong = sorted(
        {
            r[0]
            for r in rows
            if r[0] in orders
            and (r[1], r[2], str(r[3]))
            != (sale_id, orders[r[0]].get("user_id"), orders[r[0]].get("quantity"))
        }
    )
    problems = []
    if missing:
        problems.append(f"{len(missing)} confirmed order(s) missing: {_some(missing)}")
    if twice:
        problems.append(f"{len(twice)} order(s) more than once: {_some(twice)}")
    if unknown:
        problems.append(f"{len(unknown)} row(s) unknown to Redis: {_some(unknown)}")
    if failed:
        problems.append(f"{len(failed)} failed order(s) in the sink: {_some(failed)}")
    if wrong:
        problems.append(f"{len(wrong)} row(s) disagree with their order: {_some(wrong)}")
    facts = f"{len(confirmed)} confirmed|paid|expired orders, {len(rows)} sink rows ({path})"
    # Not failures: cancelled after confirmation (cancel does not notify the
    # sink), or written but not yet confirmed (the confirm follows the write).
    notes = [
        f"{n} {s} order(s) also in the sink"
        for s in ("cancelled", "queued", "undetermined")
        if (n := sum(1 for v in status_of.values() if v == s))
    ]
    if notes:
        facts += "; " + ", ".join(notes)
    if problems:
        return Check("sink_exactly_once", False, "; ".join(problems) + f" ({facts})")
    return Check("sink_exactly_once", True, facts)


ADMIN_ONLY_NOTE = (
    "admin API only: never_oversold, per_user_limit, counts_consistent and "
    "sink_exactly_once need --redis-url"
)


def fetch_admin_view(url: str, token: str, sale_id: str, timeout: float = 10) -> dict[str, Any]:
    """``GET /admin/v1/sales/{sale_id}``; CheckError when it cannot be had."""
    try:
        _, view = call(
            url, token, "GET", f"/admin/v1/sales/{quote(sale_id, safe='')}", None, timeout
        )
    except AdminClientError as exc:
        raise CheckError(str(exc)) from None
    if not isinstance(view, dict) or not isinstance(view.get("orders"), dict):
        raise CheckError(f"{url} did not answer with an admin sale view")
    return view


def admin_checks(view: dict[str, Any], *, require_drained: bool = False) -> list[Check]:
    """What the admin view alone can prove (counters, as the gateway reports them)."""
    try:
        total, left = int(view["stock_total"]), int(view["stock_left"])
        limit = int(view["per_user_limit"])
        # paid/expired: absent from a gateway older than issue 15
        counts = {s: int(view["orders"].get(s, 0)) for s in ORDER_STATUSES}
        backlog = int(view["backlog"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckError(f"the admin sale view lacks a field: {exc}") from None
    held = sum(counts[s] for s in HOLDING)
    sold = total - left
    checks = [
        Check(
            "stock_left_nonnegative",
            left >= 0,
            f"stock_left {left} of stock_total {total}",
        ),
    ]
    # Every order holds 1..per_user_limit units, so the holding orders bound
    # the units sold; with a limit of 1 they must equal them.
    low, high = held, held * limit
    checks.append(
        Check(
            "sold_matches_orders",
            low <= sold <= high,
            f"stock_total − stock_left = {sold}; {held} {'|'.join(HOLDING)} orders of 1.."
            f"{limit} units each allow {low}..{high}",
        )
    )
    negative = [f"{s} {n}" for s, n in counts.items() if n < 0]
    checks.append(
        Check(
            "counts_nonnegative",
            not negative and backlog >= 0,
            ", ".join(f"{s} {n}" for s, n in counts.items()) + f", backlog {backlog}",
        )
    )
    checks.append(
        Check(
            "backlog_matches_queued",
            backlog == counts["queued"],
            f"backlog {backlog}, queued {counts['queued']}",
        )
    )
    if require_drained:
        checks.append(
            Check(
                "every_order_final",
                counts["queued"] == 0 and backlog == 0,
                f"queued {counts['queued']}, backlog {backlog}",
            )
        )
    return checks


async def read_summed(redis: Redis, sale_id: str) -> dict[str, str]:
    """The sale hash ({} when none); for a sale with buckets, with stock_left
    (pool + buckets, not counting transfers in flight) and the order counters
    summed over its buckets. For watching a run; the checks use
    :func:`check_buckets`, which counts everything."""
    sale: dict[str, str] = await redis.hgetall(keys.sale(sale_id))  # type: ignore[assignment]
    if not sale or "buckets" not in sale:
        return sale
    fields = ["stock_left", *(f"n_{s}" for s in ORDER_STATUSES)]
    pipe = redis.pipeline(transaction=False)
    for tag in sale.get("tags", "").split():
        pipe.hmget(keys.sale(tag), fields)
    rows: list[list[str | None]] = await pipe.execute()
    sums = [sum(_int(row[i]) or 0 for row in rows) for i in range(len(fields))]
    sums[0] += _int(sale.get("pool")) or 0
    return {**sale, **{f: str(v) for f, v in zip(fields, sums, strict=True)}}


async def _events_delivered(redis: Redis, sale_id: str, sale: dict[str, str]) -> bool:
    """With a pay window (issue 15): no status event left in the sale's
    streams (the sink has heard every paid, expired and cancel)."""
    if not sale.get("pay_window_s"):
        return True
    owners = sale.get("tags", "").split() or [sale_id]
    for owner in owners:
        if await redis.xlen(keys.stream(owner)):
            return False
    return True


def drained(sale: dict[str, Any]) -> bool:
    """True when a sale hash (or admin view) shows no undelivered order — and,
    for a sale with a pay window (issue 15), none still awaiting payment
    (every confirmed order paid or expired: the books after the window)."""
    if "orders" in sale:  # an admin view
        waiting = int(sale["orders"].get("confirmed", 0)) if sale.get("pay_window_s") else 0
        return int(sale["orders"]["queued"]) == 0 and int(sale["backlog"]) == 0 and not waiting
    waiting = int(sale.get("n_confirmed") or 0) if sale.get("pay_window_s") else 0
    return int(sale.get("n_queued") or 0) == 0 and not waiting


async def wait_drained(redis: Redis, sale_id: str, seconds: float, poll: float = 0.05) -> bool:
    """Poll the sale hash until its backlog (n_queued) is 0, at most *seconds*; True if
    it got there."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        sale = await read_summed(redis, sale_id)
        if sale and drained(sale) and await _events_delivered(redis, sale_id, sale):
            return True
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(poll)
