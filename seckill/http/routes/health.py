"""Liveness and readiness (docs/API.md §4).

``/healthz`` answers for what this gateway owns: the process, and the
embedded Redis server when it runs one (503 while that server is down and
being restarted). An external Redis is not its business: a liveness probe
that failed on it would restart every gateway for an outage they cannot fix.
``/readyz`` answers whether this process can take buys now.
"""

from __future__ import annotations

from aiohttp import web

from seckill.http.responses import REDIS_DOWN, error_response, json_response
from seckill.http.state import RUNTIME, SERVER_PROBLEM, SETTINGS
from seckill.schemas import Health, Ready

routes = web.RouteTableDef()


def _server_problem(request: web.Request) -> str | None:
    problem = request.app.get(SERVER_PROBLEM)
    return None if problem is None else problem()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    problem = _server_problem(request)
    if problem is not None:
        return error_response(503, "unavailable", problem, 1)
    return json_response(Health("ok"))


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """200 when the embedded server (if any) is up, both Redis clients answer
    (the pooled one and the hot path's auto-pipeline), the event listener is
    subscribed (roles all and gateway) and the order workers run (roles all
    and worker)."""
    problem = _server_problem(request)
    if problem is not None:
        return error_response(503, "unavailable", problem, 1)
    rt = request.app[RUNTIME]
    try:
        await rt.clients.ping()
    except REDIS_DOWN:
        return error_response(503, "unavailable", "Redis does not answer.", 1)
    settings = request.app[SETTINGS]
    if settings.admits and not rt.listening:
        return error_response(503, "unavailable", "Not subscribed to events yet.", 1)
    if settings.delivers and (rt.pipeline is None or not rt.pipeline.running):
        return error_response(503, "unavailable", "The order workers are not running.", 1)
    return json_response(Ready("ready"))
