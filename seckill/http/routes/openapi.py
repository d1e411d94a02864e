"""``GET /openapi.json``: the OpenAPI 3.1 description of the contract, no auth."""

from __future__ import annotations

import functools

from aiohttp import web

from seckill.http.openapi import document
from seckill.schemas import encode

routes = web.RouteTableDef()


@functools.cache
def _body() -> bytes:
    return encode(document())


@routes.get("/openapi.json")
async def get_openapi(request: web.Request) -> web.Response:
    return web.Response(body=_body(), content_type="application/json")
