"""Request parsing shared by the routes: path ids, body size, bodies decoded
into the Structs of ``seckill.schemas``."""

from __future__ import annotations

import re
from typing import TypeVar

from aiohttp import web
from msgspec import Struct

from seckill.http.errors import InvalidRequest, PayloadTooLarge
from seckill.redis.keys import valid_id
from seckill.schemas import IDEMPOTENCY_KEY_PATTERN, SchemaError, decode

#: bodies of customer routes (docs/API.md §3); admin bodies may be larger
CUSTOMER_BODY_LIMIT = 4096
ADMIN_BODY_LIMIT = 16 * 1024
IDEMPOTENCY_KEY_RE = re.compile(f"^{IDEMPOTENCY_KEY_PATTERN}$")

S = TypeVar("S", bound=Struct)


def path_id(request: web.Request, name: str) -> str:
    value = request.match_info[name]
    if not valid_id(value):
        raise InvalidRequest(f"Malformed {name}.")
    return value


async def body_as(request: web.Request, kind: type[S], limit: int, default: S | None = None) -> S:
    """The body decoded as *kind*: 413 past *limit* bytes, 400 when it does
    not fit; an empty body is *default*, or a 400 when there is none."""
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"The request body is over {limit} bytes.")
    raw = await request.read()
    if len(raw) > limit:
        raise PayloadTooLarge(f"The request body is over {limit} bytes.")
    if not raw.strip():
        if default is None:
            raise InvalidRequest("A JSON object body is required.")
        return default
    try:
        return decode(raw, kind)
    except SchemaError as exc:
        raise InvalidRequest(str(exc)) from None
