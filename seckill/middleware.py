"""One middleware turns every failure into the contract's JSON error body.

``SeckillError`` carries its own status and code; aiohttp's HTTP exceptions
(404, 405, 413 …) are mapped onto contract codes; a lost or slow Redis is 503
``unavailable`` with ``Retry-After``; anything else is logged and answered as a
JSON 500 — a bug, never a traceback on the wire.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.typedefs import Handler
from redis.exceptions import BusyLoadingError, ConnectionError, ResponseError, TimeoutError

from seckill.errors import SeckillError, Unavailable

log = logging.getLogger("seckill.http")

_HTTP_CODES = {
    400: ("invalid_request", "The request is malformed."),
    401: ("unauthenticated", "Missing or invalid credentials."),
    404: ("not_found", "No such resource."),
    405: ("method_not_allowed", "Method not allowed on this resource."),
    413: ("payload_too_large", "The request body is too large."),
}

#: what a lost, hung or still-loading Redis raises through redis-py and seckill.autopipe
REDIS_DOWN = (ConnectionError, TimeoutError, BusyLoadingError)


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, headers=headers, content_type="application/json"
    )


def error_response(
    status: int, code: str, message: str, retry_after: int | None = None
) -> web.Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return json_response({"error": code, "message": message}, status, headers)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except SeckillError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.retry_after)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code, message = _HTTP_CODES.get(exc.status, ("invalid_request", exc.reason))
        resp = error_response(exc.status, code, message)
        if exc.status == 405 and "Allow" in exc.headers:
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp
    except (BadHttpMessage, web.RequestPayloadError) as exc:
        # Raised while reading the body: bad gzip/deflate data, broken chunking.
        # The client's fault, not a bug of ours.
        log.info("unreadable body on %s %s: %s", request.method, request.path, exc)
        return error_response(400, "invalid_request", "The request body could not be read.")
    except ConnectionResetError as exc:  # the client went away mid-request
        log.info("client gone on %s %s: %s", request.method, request.path, exc)
        return error_response(400, "invalid_request", "The connection was reset.")
    except REDIS_DOWN as exc:
        log.warning("Redis unavailable on %s %s: %s", request.method, request.path, exc)
        return error_response(503, Unavailable.code, Unavailable.message, 1)
    except ResponseError as exc:
        log.error("Redis error on %s %s: %s", request.method, request.path, exc)
        return error_response(503, Unavailable.code, Unavailable.message, 1)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal", "Internal error.")
