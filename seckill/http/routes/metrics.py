"""``GET /metrics``: Prometheus text format, every process of the gateway."""

from __future__ import annotations

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
    # a sale with buckets counts once, its buckets and pool summed (read_sales)
    sale_ids = sorted(m for m in members if not keys.is_bucket_tag(m))[:MAX_SALES]
    sales: dict[str, dict[str, str]] = {}
    for sale_id, sale in (await rt.scripts.read_sales(sale_ids)).items():
        if "stock_left" in sale:
            # the backlog gauge is n_queued (the hash has no field of its own)
            sales[sale_id] = {
                "stock_left": sale["stock_left"],
                "stock_total": sale.get("stock_total"),  # type: ignore[dict-item]
                "backlog": sale.get("n_queued"),  # type: ignore[dict-item]
                "undetermined": sale.get("n_undetermined"),  # type: ignore[dict-item]
            }
    body, content_type = metrics.render(sales, to_builtins(await limits.load(rt.redis)))
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = content_type
    return resp
