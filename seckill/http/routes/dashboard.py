"""``GET /dashboard``: the operators' live page (docs/API.md §5), from package files.

The page and its assets are static and public (they hold no data); what they
show comes from the admin API, which the page calls with the token the
operator enters. Only the files of the ``seckill.http.dashboard`` package are
served, by exact name, read once and kept in memory.
"""

from __future__ import annotations

import functools
from importlib import resources

from aiohttp import web

routes = web.RouteTableDef()

PACKAGE = "seckill.http.dashboard"
PAGE = "index.html"
CONTENT_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
#: the page talks to its own origin only: no CDN, no inline script, no framing;
#: ``form-action 'none'`` keeps a form from ever putting the token in a URL.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # ``?token=`` must not travel anywhere in a Referer
    "Referrer-Policy": "no-referrer",
    # small files: always revalidate, so an upgraded gateway serves its own page
    "Cache-Control": "no-cache",
}


def _content_type(name: str) -> str | None:
    dot = name.rfind(".")
    return CONTENT_TYPES.get(name[dot:]) if dot > 0 else None


@functools.cache
def files() -> dict[str, bytes]:
    """Every servable file of the package, by name."""
    found: dict[str, bytes] = {}
    for entry in resources.files(PACKAGE).iterdir():
        if entry.is_file() and _content_type(entry.name) is not None:
            found[entry.name] = entry.read_bytes()
    return found


def _serve(name: str) -> web.Response:
    body = files().get(name)
    content_type = _content_type(name)
    if body is None or content_type is None:
        raise web.HTTPNotFound()
    resp = web.Response(body=body, content_type=content_type, charset="utf-8")
    resp.headers.update(SECURITY_HEADERS)
    return resp


@routes.get("/dashboard")
async def page(request: web.Request) -> web.Response:
    return _serve(PAGE)


@routes.get("/dashboard/{name}")
async def asset(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    if name == PAGE:
        raise web.HTTPNotFound()  # one address for the page: /dashboard
    return _serve(name)
