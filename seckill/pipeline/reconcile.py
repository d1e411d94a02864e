"""Reconciliation of a sale's books (issue 15): ``seckill reconcile [SALE]``
(through ``POST /admin/v1/reconcile``) and the periodic reconciler of every
process that runs the pipeline.

Per sale (a sale with buckets: its pool, buckets and transfers in flight read
as one, its orders and units from every bucket), from the orders themselves:

- ``stock_balances``: stock_total = stock left + units held by live orders
  (queued, confirmed, undetermined, paid);
- ``units_match_orders``: each user's units (the units hash, per bucket) =
  the units of that user's live orders there;
- ``stream_consistent``: every queued order has its entry in its stream, and
  every pending entry is still in the stream;
- ``deadlines_consistent``: every confirmed order with a pay deadline is in
  its sale's (bucket's) deadline set, every member of the set is such an
  order, and none is overdue by more than ``OVERDUE_MS``;
- ``sink_statuses_match`` (with a sink that can tell: SQLite, PostgreSQL):
  every confirmed, paid or expired order is in the sink with Redis's status
  (an order whose status event is still in its stream is in flight, not a
  finding).

``repair`` fixes the safe cases: a deadline missing from its set is added and
a stale member removed; an overdue order is expired (expire.lua: the same
compare-and-set as the sweeper's); a queued order without a stream entry gets
one again (the sink is idempotent); a sink status that differs is set to
Redis's. A units or stock imbalance is reported, never "repaired": it needs a
person.

Order hashes are read by SCAN, so a sale of 100k orders takes seconds; orders
past their retention TTL are gone and not compared.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from redis.exceptions import RedisError

from seckill.pipeline.sinks import Order, SinkError, StatusReader, StatusSink, one_line
from seckill.redis import keys
from seckill.redis.scripts import Scripts

log = logging.getLogger("seckill.reconcile")

#: statuses whose units are held (sold): they count against the stock and the user
LIVE = ("queued", "confirmed", "undetermined", "paid")
#: statuses an order reaches only after the sink got it
IN_SINK = ("confirmed", "paid", "expired")
#: an order this late past its pay deadline means the sweeper is not running (ms)
OVERDUE_MS = 10_000
#: seconds between two passes of the periodic reconciler
RECONCILE_PERIOD = 30.0
#: keys per SCAN step and per pipelined batch
BATCH = 1000
SHOWN = 3


@dataclass(slots=True)
class Finding:
    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


@dataclass(slots=True)
class SaleReport:
    sale_id: str
    checks: list[Finding] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    #: units sold by the stock (stock_total - stock left) less units held by live orders
    drift: int = 0

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {
            "sale_id": self.sale_id,
            "ok": self.ok,
            "drift": self.drift,
            "checks": [c.as_dict() for c in self.checks],
            "repaired": self.repaired,
        }


def _some(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN])
    return shown + (f", … ({len(items)} in all)" if len(items) > SHOWN else "")


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _orders_of(redis: Any, owner: str) -> dict[str, dict[str, str]]:
    prefix = keys.order(owner, "")
    pattern = prefix.replace("[", "\\[").replace("]", "\\]").replace("*", "\\*") + "*"
    names: list[str] = []
    seen: set[str] = set()
    async for name in redis.scan_iter(match=pattern, count=BATCH):
        name = _s(name)
        if name not in seen:
            seen.add(name)
            names.append(name)
    found: dict[str, dict[str, str]] = {}
    for i in range(0, len(names), BATCH):
        chunk = names[i : i + BATCH]
        async with redis.pipeline(transaction=False) as pipe:
            for name in chunk:
                pipe.hgetall(name)
            rows = await pipe.execute()
        for name, row in zip(chunk, rows, strict=True):
            if row:
                found[name[len(prefix) :]] = {_s(k): _s(v) for k, v in row.items()}
    return found


@dataclass(slots=True)
class _Owner:
    """What one key owner (a sale, or one bucket of it) holds."""

    tag: str
    orders: dict[str, dict[str, str]]
    units: dict[str, int]
    #: order ids of the stream's order entries, and of its status events
    entries: set[str]
    events: set[str]
    #: pending entry ids, and the stream's entry ids
    pending: set[str]
    stream_ids: set[str]
    deadlines: dict[str, int]


async def _read_owner(redis: Any, tag: str) -> _Owner:
    orders = await _orders_of(redis, tag)
    units = {_s(k): int(v) for k, v in (await redis.hgetall(keys.units(tag))).items()}
    entries: set[str] = set()
    events: set[str] = set()
    stream_ids: set[str] = set()
    last = "-"
    while True:
        rows = await redis.xrange(keys.stream(tag), min=last, max="+", count=BATCH)
        fresh = [(i, f) for i, f in rows if _s(i) != last]
        if not fresh:
            break
        for entry_id, fields in fresh:
            stream_ids.add(_s(entry_id))
            f = {_s(k): _s(v) for k, v in fields.items()}
            (events if "status" in f else entries).add(f.get("order_id", ""))
        last = _s(fresh[-1][0])
    pending: set[str] = set()
    try:
        rows = await redis.xpending_range(keys.stream(tag), "seckill", "-", "+", 100_000)
        pending = {_s(r["message_id"]) for r in rows}
    except RedisError:  # no group yet: nothing pending
        pending = set()
    scored = await redis.zrange(keys.pay_deadlines(tag), 0, -1, withscores=True)
    deadlines = {_s(m): int(s) for m, s in scored}
    return _Owner(tag, orders, units, entries, events, pending, stream_ids, deadlines)


async def reconcile_sale(
    redis: Any,
    scripts: Scripts,
    sale_id: str,
    *,
    sink: Any = None,
    repair: bool = False,
    retention: int = 0,
    now_ms: int | None = None,
) -> SaleReport | None:
    """The report of one sale (None: no such sale); *repair* fixes the safe cases."""
    sale = await scripts.read_sale(sale_id)
    if not sale:
        return None
    report = SaleReport(sale_id)
    tags = await scripts.route(sale_id) or (sale_id,)
    owners = [await _read_owner(redis, tag) for tag in tags]
    now = int(time.time() * 1000) if now_ms is None else now_ms

    # -- stock balances
    held = 0
    for o in owners:
        for order in o.orders.values():
            if order.get("status") in LIVE:
                held += int(order.get("quantity") or 0)
    total, left = int(sale.get("stock_total") or 0), int(sale.get("stock_left") or 0)
    report.drift = total - left - held
    report.checks.append(
        Finding(
            "stock_balances",
            report.drift == 0,
            f"stock_total {total} = stock left {left} + {held} held by live orders"
            if report.drift == 0
            else f"stock_total {total} ≠ stock left {left} + {held} held by live orders"
            f" (drift {report.drift})",
        )
    )

    # -- units per user, per owner
    wrong: list[str] = []
    for o in owners:
        by_user: Counter[str] = Counter()
        for order in o.orders.values():
            if order.get("status") in LIVE:
                by_user[order.get("user_id", "")] += int(order.get("quantity") or 0)
        for user in sorted(set(by_user) | set(o.units)):
            if by_user[user] != o.units.get(user, 0):
                wrong.append(f"{user} holds {o.units.get(user, 0)}, orders {by_user[user]}")
    report.checks.append(
        Finding(
            "units_match_orders",
            not wrong,
            f"{len(wrong)} user(s) differ: {_some(wrong)}"
            if wrong
            else f"{sum(sum(o.units.values()) for o in owners)} units held",
        )
    )

    # -- stream and pending
    lost: list[tuple[_Owner, str]] = []
    dangling = 0
    for o in owners:
        lost += [
            (o, i)
            for i, order in o.orders.items()
            if order.get("status") == "queued" and i not in o.entries
        ]
        dangling += len(o.pending - o.stream_ids)
    problems = []
    if lost:
        problems.append(
            f"{len(lost)} queued order(s) without a stream entry: {_some([i for _, i in lost])}"
        )
    if dangling:
        problems.append(f"{dangling} pending entr(y/ies) no longer in the stream")
    report.checks.append(
        Finding(
            "stream_consistent",
            not problems,
            "; ".join(problems)
            or f"{sum(len(o.stream_ids) for o in owners)} stream entries,"
            f" {sum(len(o.pending) for o in owners)} pending",
        )
    )
    if repair:
        for o, order_id in lost:
            order = o.orders[order_id]
            await redis.xadd(
                keys.stream(o.tag),
                {
                    "order_id": order_id,
                    "user_id": order.get("user_id", ""),
                    "quantity": order.get("quantity", "1"),
                    "created_at": order.get("created_at", "0"),
                },
            )
            report.repaired.append(f"{order_id}: stream entry added again")

    # -- pay deadlines
    missing: list[tuple[_Owner, str, int]] = []
    stale: list[tuple[_Owner, str]] = []
    overdue: list[tuple[_Owner, str]] = []
    for o in owners:
        for i, order in o.orders.items():
            deadline = order.get("pay_deadline")
            if order.get("status") == "confirmed" and deadline:
                if i not in o.deadlines:
                    missing.append((o, i, int(deadline)))
                if now - int(deadline) > OVERDUE_MS:
                    overdue.append((o, i))
        stale += [
            (o, i)
            for i in o.deadlines
            if o.orders.get(i, {}).get("status") != "confirmed" and i in o.orders
        ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {_some([i for _, i, _ in missing])}")
    if stale:
        problems.append(f"{len(stale)} stale: {_some([i for _, i in stale])}")
    if overdue:
        problems.append(
            f"{len(overdue)} overdue by over {OVERDUE_MS // 1000} s (is a pipeline running?):"
            f" {_some([i for _, i in overdue])}"
        )
    report.checks.append(
        Finding(
            "deadlines_consistent",
            not problems,
            "; ".join(problems)
            or f"{sum(len(o.deadlines) for o in owners)} order(s) awaiting payment",
        )
    )
    if repair:
        for o, order_id, due in missing:
            await redis.zadd(keys.pay_deadlines(o.tag), {order_id: due})
            report.repaired.append(f"{order_id}: pay deadline added")
        for o, order_id in stale:
            await redis.zrem(keys.pay_deadlines(o.tag), order_id)
            report.repaired.append(f"{order_id}: stale pay deadline removed")
        for o, order_id in overdue:
            if await scripts.expire(o.tag, order_id, retention=retention):
                report.repaired.append(f"{order_id}: expired (overdue)")

    # -- the sink's statuses
    if isinstance(sink, StatusReader):
        await _check_sink(report, owners, sink, repair)
    return report


async def _check_sink(report: SaleReport, owners: list[_Owner], sink: Any, repair: bool) -> None:
    expected: dict[str, tuple[str, dict[str, str]]] = {}
    for o in owners:
        for i, order in o.orders.items():
            status = order.get("status", "")
            if i in o.events:  # its status event is on its way
                continue
            if status in IN_SINK or (status == "cancelled" and "confirmed_at" in order):
                expected[i] = (status, order)
    try:
        found = await sink.statuses(sorted(expected))
    except SinkError as exc:
        report.checks.append(
            Finding("sink_statuses_match", False, f"cannot read the sink: {one_line(exc)}")
        )
        return
    absent = sorted(i for i, (s, _) in expected.items() if s in IN_SINK and i not in found)
    differ = sorted(i for i, (s, _) in expected.items() if i in found and found[i] != s)
    problems = []
    if absent:
        problems.append(f"{len(absent)} order(s) not in the sink: {_some(absent)}")
    if differ:
        problems.append(
            f"{len(differ)} status(es) differ: "
            + _some([f"{i} sink {found[i]} / redis {expected[i][0]}" for i in differ])
        )
    counts = Counter(found.values())
    report.checks.append(
        Finding(
            "sink_statuses_match",
            not problems,
            "; ".join(problems)
            or "sink: " + (", ".join(f"{s} {n}" for s, n in sorted(counts.items())) or "no rows"),
        )
    )
    if repair and differ and isinstance(sink, StatusSink):
        for order_id in differ:
            status, order = expected[order_id]
            if status == "confirmed":  # a final status never goes back
                continue
            try:
                await sink.set_status(
                    Order(
                        order_id,
                        order.get("sale_id", ""),
                        order.get("user_id", ""),
                        int(order.get("quantity") or 1),
                        int(order.get("created_at") or 0),
                    ),
                    status,
                    0,
                )
                report.repaired.append(f"{order_id}: sink status set to {status}")
            except SinkError as exc:
                log.warning("reconcile: sink status of %s not set: %s", order_id, one_line(exc))


async def sale_ids(redis: Any) -> list[str]:
    members = await redis.smembers(keys.SALES_INDEX)
    return sorted({keys.sale_of_tag(_s(m)) for m in members})


async def reconcile_all(
    redis: Any,
    scripts: Scripts,
    only: str | None = None,
    *,
    sink: Any = None,
    repair: bool = False,
    retention: int = 0,
) -> list[SaleReport]:
    reports = []
    for sale_id in [only] if only else await sale_ids(redis):
        report = await reconcile_sale(
            redis, scripts, sale_id, sink=sink, repair=repair, retention=retention
        )
        if report is not None:
            reports.append(report)
    return reports


async def reconcile_forever(redis: Any, scripts: Scripts, sink: Any) -> None:
    """Every RECONCILE_PERIOD: check every sale, once per period cluster-wide
    (the first process to take ``seckill:{S}:reconciled`` for the period does
    it; the others skip that sale). The failing checks of a pass are kept in
    the sale's home hash (``recon_findings``), so whichever process runs the
    next pass logs a finding that two passes in a row made (a buy or a
    delivery between two reads of one pass is not a finding); the drift of a
    sale with buckets is kept there too (``recon_drift``: its
    ``seckill_sale_reconciliation_drift`` gauge, which the scrape cannot
    afford to compute). Never repairs."""
    while True:
        await asyncio.sleep(RECONCILE_PERIOD)
        try:
            for sale_id in await sale_ids(redis):
                claimed = await redis.set(
                    keys.reconciled(sale_id), "1", nx=True, px=int(RECONCILE_PERIOD * 800)
                )
                if not claimed:
                    continue
                report = await reconcile_sale(redis, scripts, sale_id, sink=sink)
                if report is None:
                    continue
                failing = sorted(c.name for c in report.checks if not c.ok)
                before = _s(await redis.hget(keys.sale(sale_id), "recon_findings") or "")
                fields: dict[str, Any] = {"recon_findings": ",".join(failing)}
                if await scripts.route(sale_id):
                    fields["recon_drift"] = report.drift
                await redis.hset(keys.sale(sale_id), mapping=fields)
                for c in report.checks:
                    if not c.ok and c.name in before.split(","):
                        log.warning("reconcile %s: %s: %s", sale_id, c.name, c.detail)
        except (RedisError, OSError) as exc:
            log.warning("periodic reconciler: %s; next pass in %.0f s", exc, RECONCILE_PERIOD)
        except Exception:  # a bug must not stop it (nor the pipeline's readiness)
            log.exception("periodic reconciler: unexpected error; next pass goes on")
