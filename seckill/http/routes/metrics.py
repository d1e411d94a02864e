"""``GET /metrics``: Prometheus text format, every process of the gateway.

The process counters always answer; the Redis state (stock, backlog,
undetermined orders, reconciliation drift, limits) is read at scrape time.
When Redis does not answer within ``--redis-timeout``, the scrape still
succeeds, without those gauges and with ``seckill_redis_up 0``: an alert on
it fires while the processes' own figures stay visible.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError

from seckill import metrics
from seckill.core import limits
from seckill.http.auth import check_bearer
from seckill.http.state import RUNTIME, SETTINGS
from seckill.redis import keys
from seckill.redis.scripts import Scripts
from seckill.schemas import to_builtins

routes = web.RouteTableDef()
log = logging.getLogger("seckill.metrics")

#: sales shown with their stock and backlog gauges, at most (newest ids first is
#: not knowable from a set; the index is small in practice)
MAX_SALES = 1000
#: the reconciliation drift reads every holder of a sale (HVALS of its units
#: hash): per scrape, only sales with at most this many holders, and at most
#: MAX_RECONCILED_HOLDERS holders in all; larger sales get no drift gauge
MAX_SALE_HOLDERS = 10_000
MAX_RECONCILED_HOLDERS = 100_000


@routes.get("/metrics")
async def get_metrics(request: web.Request) -> web.Response:
    """With --metrics-token, 401 unless the request carries it as a bearer token."""
    token = request.app[SETTINGS].metrics_token
    if token is not None:
        check_bearer(request, token, "Missing or wrong metrics token.")
    rt = request.app[RUNTIME]
    try:
        sales = await _sales(rt.redis, rt.scripts)
        stored = to_builtins(await limits.load(rt.redis))
    except (RedisError, OSError) as exc:  # redis-py's timeouts and resets included
        log.warning("/metrics without the Redis state: %s", exc)
        body, content_type = metrics.render({}, None, redis_up=False)
    else:
        body, content_type = metrics.render(sales, stored, redis_up=True)
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = content_type
    return resp


async def _sales(redis: Redis, scripts: Scripts) -> dict[str, dict[str, str]]:
    """Per sale: its stock, backlog and undetermined gauges, and its drift.

    A sale with buckets counts once, its buckets and pool summed
    (:meth:`Scripts.read_sales`)."""
    members: set[str] = await redis.smembers(keys.SALES_INDEX)  # type: ignore[assignment, misc]
    sale_ids = sorted(m for m in members if not keys.is_bucket_tag(m))[:MAX_SALES]
    sales: dict[str, dict[str, str]] = {}
    unbucketed: list[str] = []
    for sale_id, sale in (await scripts.read_sales(sale_ids)).items():
        if "stock_left" not in sale:
            continue
        # the backlog gauge is n_queued (the hash has no field of its own)
        sales[sale_id] = {
            "stock_left": sale["stock_left"],
            "stock_total": sale.get("stock_total", ""),
            "backlog": sale.get("n_queued", ""),
            "undetermined": sale.get("n_undetermined", ""),
        }
        if "buckets" not in sale:
            unbucketed.append(sale_id)
        elif sale.get("recon_drift"):  # the periodic reconciler's last figure (issue 15)
            sales[sale_id]["drift"] = sale["recon_drift"]
    if unbucketed:
        async with redis.pipeline(transaction=False) as pipe:
            for sale_id in unbucketed:
                pipe.hlen(keys.units(sale_id))
            counts: list[Any] = await pipe.execute()
        # a sale with buckets gets the periodic reconciler's drift (above):
        # its units move between the pool and buckets on several slots
        await _drift(redis, sales, {s: int(n) for s, n in zip(unbucketed, counts, strict=True)})
    metrics.prepare_sales([s for s, sale in sales.items() if sale["stock_left"] not in ("0", "")])
    return sales


async def _drift(redis: Redis, sales: dict[str, dict[str, str]], holders: dict[str, int]) -> None:
    """Set ``drift`` of each affordable sale: the units its counters say are
    sold (stock_total - stock_left) less the units its users hold (the units
    hash). The Lua scripts move both in one step, so anything but 0 is a
    finding. Read in one MULTI per sale (one slot, so a cluster takes it too),
    so that no buy lands between the two."""
    chosen: list[str] = []
    budget = MAX_RECONCILED_HOLDERS
    for sale_id, n in holders.items():
        if n <= MAX_SALE_HOLDERS and n <= budget:
            chosen.append(sale_id)
            budget -= n
    if not chosen:
        return
    rows: list[Any] = []
    # one MULTI of every sale on one server; in a cluster one MULTI per sale
    # (a transaction spans one slot), sent together
    groups = [[s] for s in chosen] if isinstance(redis, RedisCluster) else [chosen]

    async def read(group: list[str]) -> list[Any]:
        async with redis.pipeline(transaction=True) as pipe:
            for sale_id in group:
                pipe.hmget(keys.sale(sale_id), ["stock_left", "stock_total"])
                pipe.hvals(keys.units(sale_id))
            return await pipe.execute()  # type: ignore[no-any-return]

    for part in await asyncio.gather(*(read(g) for g in groups)):
        rows += part
    for sale_id, (left, total), held in zip(chosen, rows[0::2], rows[1::2], strict=True):
        if left is None or total is None:
            continue
        sales[sale_id]["drift"] = str(int(total) - int(left) - sum(int(v) for v in held))
