"""Request parsing shared by the routes: ids, JSON bodies, integers."""

from __future__ import annotations

import re
from typing import Any

import orjson
from aiohttp import web

from seckill.http.errors import InvalidRequest, PayloadTooLarge
from seckill.redis.keys import valid_id

CUSTOMER_BODY_LIMIT = 4096
IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,64}$")


def path_id(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    if not valid_id(value):
        raise InvalidRequest(f"Malformed {name}.")
    return value


async def json_object(request: web.Request, limit: int, *, required: bool) -> dict[str, Any]:
    """The body as a JSON object ({} for an empty body unless *required*)."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"The request body is over {limit} bytes.")
    raw = await request.read()
    if len(raw) > limit:
        raise PayloadTooLarge(f"The request body is over {limit} bytes.")
    if not raw.strip():
        if required:
            raise InvalidRequest("A JSON object body is required.")
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    return body


def integer(body: dict[str, Any], name: str, low: int, high: int) -> int:
    value = body[name]
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidRequest(f"{name} must be an integer from {low} to {high}.")
    return value
