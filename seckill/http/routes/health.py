"""Liveness and readiness."""

from __future__ import annotations

from aiohttp import web

from seckill.http.responses import REDIS_DOWN, error_response, json_response
from seckill.http.state import RUNTIME
from seckill.schemas import Health, Ready

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return json_response(Health("ok"))


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """200 when both Redis clients answer (the pooled one and the hot path's
    auto-pipeline), the event listener is subscribed and the order workers run."""
    rt = request.app[RUNTIME]
    try:
        await rt.clients.ping()
    except REDIS_DOWN:
        return error_response(503, "unavailable", "Redis does not answer.", 1)
    if not rt.listening:
        return error_response(503, "unavailable", "Not subscribed to events yet.", 1)
    if rt.pipeline is None or not rt.pipeline.running:
        return error_response(503, "unavailable", "The order workers are not running.", 1)
    return json_response(Ready("ready"))
