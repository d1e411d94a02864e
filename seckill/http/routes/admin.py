"""Admin API (docs/API.md §5): sales, cancels, limits and stats. Bearer token on every route."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from aiohttp import web

from seckill import metrics
from seckill.core import limits
from seckill.core.views import admin_view, now_ms, order_view
from seckill.http import errors
from seckill.http.auth import check_admin
from seckill.http.responses import json_response
from seckill.http.state import ADMIN_TOKEN, RUNTIME, SETTINGS
from seckill.http.validate import ADMIN_BODY_LIMIT, body_as, path_id
from seckill.pipeline.reconcile import reconcile_all
from seckill.pipeline.sinks import SinkError, sink_from_url
from seckill.redis import keys
from seckill.redis.events import publish_limits_changed, publish_sale_changed
from seckill.redis.scripts import Cancel, Paid, SalePut, Settle
from seckill.schemas import (
    MAX_LISTED_ORDERS,
    MAX_LISTED_SALES,
    LimitsUpdate,
    OrderList,
    ReconcileRequest,
    Reconciliation,
    SaleList,
    SaleUpdate,
    SettleRequest,
    to_builtins,
)
from seckill.timefmt import parse_rfc3339

log = logging.getLogger("seckill.sales")
routes = web.RouteTableDef()


def _admin(request: web.Request) -> None:
    check_admin(request, request.app[ADMIN_TOKEN])


def lua_fields(update: SaleUpdate) -> dict[str, Any]:
    """The fields of a PUT body as sale_put.lua takes them: the fields given,
    times in ms (None = null)."""
    fields: dict[str, Any] = to_builtins(update)  # UNSET fields are left out
    for name in ("starts_at", "ends_at"):
        if fields.get(name) is not None:
            try:
                fields[name] = parse_rfc3339(fields[name])
            except ValueError:
                raise errors.InvalidRequest(
                    f"{name} must be an RFC 3339 timestamp with an offset, or null."
                ) from None
    return fields


@routes.put("/admin/v1/sales/{sale_id}")
async def put_sale(request: web.Request) -> web.Response:
    _admin(request)
    sale_id = path_id(request, "sale_id")
    fields = lua_fields(await body_as(request, SaleUpdate, ADMIN_BODY_LIMIT))
    rt = request.app[RUNTIME]
    result = await rt.scripts.sale_put(sale_id, fields)
    if result.outcome is SalePut.MISSING_STOCK:
        raise errors.InvalidRequest("stock is required to create a sale.")
    if result.outcome is SalePut.BAD_WINDOW:
        raise errors.InvalidRequest("ends_at must be after starts_at.")
    if result.outcome is SalePut.STOCK_CONFLICT:
        raise errors.StockConflict(f"stock cannot go below the {result.sold} unit(s) already sold.")
    if result.outcome is SalePut.BUCKETS_IMMUTABLE:
        raise errors.BucketsImmutable(
            f"The sale has {result.buckets} bucket(s); buckets are fixed at creation."
        )
    # The index is what the order reader walks; SADD is idempotent, so an update
    # also repairs a create whose SADD was lost. A sale with buckets adds its
    # bucket tags (their streams are read like a sale's).
    await rt.redis.sadd(keys.SALES_INDEX, sale_id, *(await rt.scripts.route(sale_id) or ()))
    rt.cache.changed(sale_id)
    await publish_sale_changed(rt.redis, sale_id)
    status = 201 if result.outcome is SalePut.CREATED else 200
    log.info(
        "sale %s %s: stock %s/%s, per user %s",
        sale_id,
        "created" if status == 201 else "updated",
        result.sale.get("stock_left"),
        result.sale.get("stock_total"),
        result.sale.get("per_user_limit"),
        extra={"sale_id": sale_id},
    )
    return json_response(admin_view(sale_id, result.sale, now_ms()), status)


@routes.get("/admin/v1/sales")
async def list_sales(request: web.Request) -> web.Response:
    """Every sale's admin view, sorted by id, at most MAX_LISTED_SALES (the dashboard's list)."""
    _admin(request)
    rt = request.app[RUNTIME]
    members: set[str] = await rt.redis.smembers(keys.SALES_INDEX)  # type: ignore[assignment, misc]
    all_ids = sorted(m for m in members if not keys.is_bucket_tag(m))
    sale_ids = all_ids[:MAX_LISTED_SALES]
    # in the index, but its hash is gone: not a sale any more (left out)
    rows = await rt.scripts.read_sales(sale_ids)
    at = now_ms()
    views = [admin_view(sale_id, rows[sale_id], at) for sale_id in sale_ids if sale_id in rows]
    return json_response(SaleList(views, truncated=len(all_ids) > MAX_LISTED_SALES))


@routes.get("/admin/v1/sales/{sale_id}")
async def get_sale(request: web.Request) -> web.Response:
    _admin(request)
    sale_id = path_id(request, "sale_id")
    sale = await request.app[RUNTIME].scripts.read_sale(sale_id)
    if not sale:
        raise errors.SaleNotFound()
    return json_response(admin_view(sale_id, sale, now_ms()))


@routes.get("/admin/v1/stats")
async def get_stats(request: web.Request) -> web.Response:
    """This gateway's counters (every process of it), for the dashboard; no Redis call."""
    _admin(request)
    return json_response(metrics.stats())


@routes.get("/admin/v1/limits")
async def get_limits(request: web.Request) -> web.Response:
    _admin(request)
    return json_response(await limits.load(request.app[RUNTIME].redis))


@routes.put("/admin/v1/limits")
async def put_limits(request: web.Request) -> web.Response:
    """Change the fields given; every process applies it within a second."""
    _admin(request)
    changes = await body_as(request, LimitsUpdate, ADMIN_BODY_LIMIT)
    if not to_builtins(changes):
        raise errors.InvalidRequest(
            f"Give at least one of: {', '.join(LimitsUpdate.__struct_fields__)}."
        )
    rt = request.app[RUNTIME]
    stored = await limits.store(rt.redis, changes)
    rt.apply_limits(stored)
    await publish_limits_changed(rt.redis)
    return json_response(stored)


@routes.post("/admin/v1/orders/{order_id}/cancel")
async def cancel_order(request: web.Request) -> web.Response:
    """queued|confirmed -> cancelled; its units go back and the user may buy again."""
    _admin(request)
    order_id, sale_id = _order_id(request)
    rt = request.app[RUNTIME]
    retention = request.app[SETTINGS].order_retention
    owner = await rt.scripts.order_owner(order_id) or sale_id
    outcome, order = await rt.scripts.cancel(owner, order_id, retention=retention)
    if outcome is Cancel.NOT_FOUND:
        raise errors.OrderNotFound()
    if outcome is Cancel.NOT_CANCELLABLE:
        status = order.get("status")
        if status == "undetermined":
            raise errors.OrderNotCancellable(
                "The order is undetermined: settle it (confirm or release) instead."
            )
        raise errors.OrderNotCancellable(f"The order is already {status}.")
    log.info(
        "order %s cancelled by an operator: its stock returned",
        order_id,
        extra={"sale_id": sale_id, "order_id": order_id},
    )
    rt.cache.changed(sale_id)
    await publish_sale_changed(rt.redis, sale_id)
    return json_response(order_view(order))


@routes.post("/admin/v1/orders/{order_id}/paid")
async def paid_order(request: web.Request) -> web.Response:
    """confirmed -> paid (issue 15): 200 with the order, again 200 when
    repeated; 409 order_expired once its pay deadline has passed."""
    _admin(request)
    order_id, sale_id = _order_id(request)
    rt = request.app[RUNTIME]
    retention = request.app[SETTINGS].order_retention
    owner = await rt.scripts.order_owner(order_id) or sale_id
    outcome, order = await rt.scripts.paid(owner, order_id, retention=retention)
    if outcome is Paid.NOT_FOUND:
        raise errors.OrderNotFound()
    if outcome is Paid.EXPIRED:
        raise errors.OrderExpired()
    if outcome is Paid.NOT_PAYABLE:
        raise errors.OrderNotPayable(
            f"The order is {order.get('status')}; only a confirmed order can be paid."
        )
    if outcome is Paid.PAID:
        log.info("order %s paid", order_id, extra={"sale_id": sale_id, "order_id": order_id})
    return json_response(order_view(order))


@routes.post("/admin/v1/reconcile")
async def reconcile(request: web.Request) -> web.Response:
    """Check the books of one sale or of every sale (issue 15); ``repair``
    fixes the safe cases. With a pipeline in this process, its sink is
    compared too; else a sink opened for the call (SQLite, PostgreSQL)."""
    _admin(request)
    body = await body_as(request, ReconcileRequest, ADMIN_BODY_LIMIT)
    rt = request.app[RUNTIME]
    settings = request.app[SETTINGS]
    if body.sale_id is not None and await rt.scripts.read_sale(body.sale_id) is None:
        raise errors.SaleNotFound()
    own_sink = None
    sink: Any = rt.pipeline.sink if rt.pipeline is not None else None
    if sink is None:
        try:
            own_sink = sink = sink_from_url(settings.sink_url, timeout=settings.delivery_timeout)
            await sink.start()
        except (ValueError, SinkError) as exc:
            log.warning("reconcile without the sink: %s", exc)
            sink = None
    try:
        reports = await reconcile_all(
            rt.redis,
            rt.scripts,
            body.sale_id,
            sink=sink,
            repair=body.repair,
            retention=settings.order_retention,
        )
    finally:
        if own_sink is not None:
            await own_sink.close()
    for report in reports:
        if body.repair and report.repaired:
            log.warning("reconcile %s repaired: %s", report.sale_id, "; ".join(report.repaired))
            rt.cache.changed(report.sale_id)
            await publish_sale_changed(rt.redis, report.sale_id)
    answer = {"ok": all(r.ok for r in reports), "sales": [r.as_dict() for r in reports]}
    return json_response(msgspec.convert(answer, Reconciliation))


def _order_id(request: web.Request) -> tuple[str, str]:
    """(order id, its sale id) from the path; 400 when malformed."""
    order_id = request.match_info["order_id"]
    sale_id = keys.sale_of_order(order_id)
    if sale_id is None:
        raise errors.InvalidRequest("Malformed order_id.")
    return order_id, sale_id


@routes.get("/admin/v1/orders")
async def list_orders(request: web.Request) -> web.Response:
    """The undetermined orders (``?status=undetermined``, the only status
    listed), of one sale (``&sale_id=S``) or of every sale."""
    _admin(request)
    status = request.query.get("status")
    if status != "undetermined":
        raise errors.InvalidRequest("Give ?status=undetermined (the only status this list shows).")
    sale_id = request.query.get("sale_id")
    if sale_id is not None and not keys.valid_id(sale_id):
        raise errors.InvalidRequest("Malformed sale_id.")
    rt = request.app[RUNTIME]
    if sale_id is None:
        # sale ids and bucket tags: a bucket parks its orders under its own tag
        members: set[str] = await rt.redis.smembers(keys.SALES_INDEX)  # type: ignore[assignment, misc]
        sale_ids = sorted(members)
    else:
        sale_ids = [sale_id, *(await rt.scripts.route(sale_id) or ())]
    found: list[tuple[str, str]] = []
    for sid in sale_ids:
        room = MAX_LISTED_ORDERS + 1 - len(found)  # one more: is the list truncated?
        if room <= 0:
            break
        ids: list[str] = await rt.redis.zrange(keys.undetermined(sid), 0, room - 1)  # type: ignore[assignment]
        found.extend((sid, oid) for oid in ids)
    truncated = len(found) > MAX_LISTED_ORDERS
    found = found[:MAX_LISTED_ORDERS]
    views = []
    if found:
        async with rt.redis.pipeline(transaction=False) as pipe:
            for sid, oid in found:
                pipe.hgetall(keys.order(sid, oid))
            hashes: list[dict[str, str]] = await pipe.execute()
        views = [order_view(h) for h in hashes if h.get("status") == "undetermined"]
    return json_response(OrderList(views, truncated=truncated))


@routes.post("/admin/v1/orders/{order_id}/settle")
async def settle_order(request: web.Request) -> web.Response:
    """undetermined -> confirmed (``{"outcome": "confirm"}``) or failed with its
    units back (``{"outcome": "release"}``)."""
    _admin(request)
    order_id, sale_id = _order_id(request)
    body = await body_as(request, SettleRequest, ADMIN_BODY_LIMIT)
    rt = request.app[RUNTIME]
    retention = request.app[SETTINGS].order_retention
    owner = await rt.scripts.order_owner(order_id) or sale_id
    outcome, order = await rt.scripts.settle(owner, order_id, body.outcome, retention=retention)
    if outcome is Settle.NOT_FOUND:
        raise errors.OrderNotFound()
    if outcome is Settle.NOT_UNDETERMINED:
        raise errors.OrderNotUndetermined(
            f"The order is {order.get('status')}, not undetermined: nothing to settle."
        )
    log.warning(
        "order %s settled by an operator: %s",
        order_id,
        "confirmed" if body.outcome == "confirm" else "released, its stock returned",
        extra={"sale_id": sale_id, "order_id": order_id},
    )
    if body.outcome == "release":
        rt.cache.changed(sale_id)
        await publish_sale_changed(rt.redis, sale_id)
    return json_response(order_view(order))
