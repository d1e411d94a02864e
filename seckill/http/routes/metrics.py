"""``GET /metrics``: Prometheus text format, every process of the gateway."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from seckill import metrics
from seckill.core import limits
from seckill.http.auth import check_bearer
from seckill.http.state import RUNTIME, SETTINGS
from seckill.redis import keys
from seckill.schemas import to_builtins

routes = web.RouteTableDef()

#: sales shown with their stock and backlog gauges, at most (newest ids first is
#: not knowable from a set; the index is small in practice)
MAX_SALES = 1000


@routes.get("/metrics")
async def get_metrics(request: web.Request) -> web.Response:
    """With --metrics-token, 401 unless the request carries it as a bearer token."""
    token = request.app[SETTINGS].metrics_token
    if token is not None:
        check_bearer(request, token, "Missing or wrong metrics token.")
    rt = request.app[RUNTIME]
    members: set[str] = await rt.redis.smembers(keys.SALES_INDEX)  # type: ignore[assignment, misc]
    sale_ids = sorted(members)[:MAX_SALES]
    sales: dict[str, dict[str, str]] = {}
    if sale_ids:
        async with rt.redis.pipeline(transaction=False) as pipe:
            for sale_id in sale_ids:
                # the backlog gauge is n_queued (the hash has no field of its own)
                pipe.hmget(
                    keys.sale(sale_id), ["stock_left", "stock_total", "n_queued", "n_undetermined"]
                )
            rows: list[Any] = await pipe.execute()
        for sale_id, (left, total, backlog, undetermined) in zip(sale_ids, rows, strict=True):
            if left is not None:
                sales[sale_id] = {
                    "stock_left": left,
                    "stock_total": total,
                    "backlog": backlog,
                    "undetermined": undetermined,
                }
    body, content_type = metrics.render(sales, to_builtins(await limits.load(rt.redis)))
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = content_type
    return resp
