"""JSON answers, and the one place where a failure becomes the contract's error body.

``SeckillError`` carries its own status and code; aiohttp's HTTP exceptions
(413, a bad body encoding …) are mapped onto contract codes; a lost or slow
Redis is 503 ``unavailable`` with ``Retry-After``; anything else is logged and
answered as a JSON 500 — a bug, never a traceback on the wire.

Why a handler wrapper and not an aiohttp middleware: any app middleware makes
aiohttp add its own ``_fix_request_current_app`` middleware and run both as
coroutines around every request: a measurable share of a cheap refusal's
cost (the same-run A/B is in docs/performance.md, "no app middleware"). So
:func:`add_routes` wraps each handler once, at startup, in :func:`json_errors`,
and answers what no handler owns — an unknown path (404) or a method a path
does not take (405 with ``Allow``) — with routes of its own, through the same
wrapper.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.typedefs import Handler
from redis.exceptions import BusyLoadingError, ConnectionError, ResponseError, TimeoutError

from seckill.http.errors import SeckillError, Unavailable
from seckill.schemas import Error, encode

log = logging.getLogger("seckill.http")

_HTTP_CODES = {
    400: ("invalid_request", "The request is malformed."),
    401: ("unauthenticated", "Missing or invalid credentials."),
    404: ("not_found", "No such resource."),
    405: ("method_not_allowed", "Method not allowed on this resource."),
    413: ("payload_too_large", "The request body is too large."),
}

#: what a lost, hung or still-loading Redis raises through redis-py and seckill.redis.autopipe
REDIS_DOWN = (ConnectionError, TimeoutError, BusyLoadingError)


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """*body* (a Struct of ``seckill.schemas``, or plain data) as JSON."""
    return web.Response(
        body=encode(body), status=status, headers=headers, content_type="application/json"
    )


def error_response(
    status: int, code: str, message: str, retry_after: int | None = None
) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return json_response(Error(code, message), status, headers)


def error_answer(request: web.Request, exc: Exception) -> web.Response:
    """The JSON answer to *exc*, raised while handling *request* (an aiohttp
    HTTPException below 400, a redirect, is raised again)."""
    if isinstance(exc, SeckillError):
        return error_response(exc.status, exc.code, exc.message, exc.retry_after)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        code, message = _HTTP_CODES.get(exc.status, ("invalid_request", exc.reason))
        resp = error_response(exc.status, code, message)
        if exc.status == 405 and "Allow" in exc.headers:
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp
    if isinstance(exc, BadHttpMessage | web.RequestPayloadError):
        # Raised while reading the body: bad gzip/deflate data, broken chunking.
        # The client's fault, not a bug of ours.
        log.info("unreadable body on %s %s: %s", request.method, request.path, exc)
        return error_response(400, "invalid_request", "The request body could not be read.")
    if isinstance(exc, ConnectionResetError):  # the client went away mid-request
        log.info("client gone on %s %s: %s", request.method, request.path, exc)
        return error_response(400, "invalid_request", "The connection was reset.")
    if isinstance(exc, REDIS_DOWN):
        log.warning("Redis unavailable on %s %s: %s", request.method, request.path, exc)
        return error_response(503, Unavailable.code, Unavailable.message, 1)
    if isinstance(exc, ResponseError):
        log.error("Redis error on %s %s: %s", request.method, request.path, exc)
        return error_response(503, Unavailable.code, Unavailable.message, 1)
    log.error("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return error_response(500, "internal", "Internal error.")


def json_errors(handler: Handler) -> Handler:
    """*handler*, with every failure answered by :func:`error_answer`."""

    @functools.wraps(handler)
    async def answer(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Exception as exc:  # not CancelledError: a BaseException
            return error_answer(request, exc)

    return answer


H = TypeVar("H", bound=Handler)


def answers_its_errors(handler: H) -> H:
    """Mark *handler* as catching every exception itself, with
    :func:`error_answer`: :func:`add_routes` then registers it unwrapped (the
    buy route: one coroutine less per buy)."""
    handler.answers_its_errors = True  # type: ignore[attr-defined]
    return handler


async def _not_found(request: web.Request) -> web.StreamResponse:
    raise web.HTTPNotFound()


def _method_not_allowed(allowed: Iterable[str]) -> Handler:
    methods = sorted(allowed)

    async def refuse(request: web.Request) -> web.StreamResponse:
        raise web.HTTPMethodNotAllowed(request.method, methods)

    return refuse


def add_routes(app: web.Application, tables: Iterable[web.RouteTableDef]) -> None:
    """Register every route of *tables* wrapped in :func:`json_errors`, then a
    405 route on each path for the methods it does not take, then a catch-all
    404 — the last resource, so it only answers paths nothing else matched."""
    for table in tables:
        for route in table:
            if not isinstance(route, web.RouteDef):  # static files: no handler of ours
                route.register(app.router)
                continue
            handler = route.handler
            if not getattr(handler, "answers_its_errors", False):
                handler = json_errors(handler)  # type: ignore[arg-type]
            web.RouteDef(route.method, route.path, handler, route.kwargs).register(app.router)
    # A path's methods may sit on several resources (routes of one path that
    # were not registered one after the other); the router tries them in
    # order, so only the last one of a path gets the 405 route.
    last: dict[str, web.Resource] = {}
    methods: dict[str, set[str]] = {}
    for resource in app.router.resources():
        if isinstance(resource, web.Resource):
            last[resource.canonical] = resource
            methods.setdefault(resource.canonical, set()).update(r.method for r in resource)
    for path, resource in last.items():
        resource.add_route("*", json_errors(_method_not_allowed(methods[path])))
    app.router.add_route("*", "/{tail:.*}", json_errors(_not_found))
