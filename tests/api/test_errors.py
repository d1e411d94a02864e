"""Every refusal is a JSON error with the contract's status and code (docs/API.md §2, §3).

Also the other identity mode (JWT) and a gateway whose Redis is unreachable.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import jwt
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from seckill.http.state import RUNTIME
from seckill.redis import keys
from seckill.redis.autopipe import AutoPipeline
from seckill.redis.client import RedisClients
from seckill.settings import Settings
from tests.helpers.api import ADMIN, create_sale, make_app

USER = {"X-User-Id": "alice"}


async def error_of(resp: Any) -> tuple[int, str]:
    """(status, code) of an error answer, checking it is the contract's JSON shape."""
    assert resp.content_type == "application/json", await resp.text()
    body = msgspec.json.decode(await resp.read())
    assert isinstance(body, dict) and set(body) == {"error", "message"}, body
    assert isinstance(body["error"], str)
    assert isinstance(body["message"], str) and body["message"].strip()
    return resp.status, body["error"]


@pytest.fixture
async def sale(client: TestClient) -> str:
    await create_sale(client, "s1", stock=10, per_user_limit=2)
    return "s1"


# --- the buy endpoint: one table of malformed requests ----------------------------------------

BUY = "/api/v1/sales/s1/orders"

BAD_BUYS: dict[str, tuple[dict[str, Any], int, str]] = {
    # body problems
    "invalid json": ({"data": b'{"quantity": 1'}, 400, "invalid_request"),
    "not json at all": ({"data": b"quantity=1"}, 400, "invalid_request"),
    "not utf-8": ({"data": b"\xff\xfe\x00"}, 400, "invalid_request"),
    "json array": ({"json": [{"quantity": 1}]}, 400, "invalid_request"),
    "json string": ({"json": "quantity"}, 400, "invalid_request"),
    "json number": ({"json": 1}, 400, "invalid_request"),
    "json null": ({"data": b"null"}, 400, "invalid_request"),
    "deeply nested": ({"data": b"[" * 2000 + b"]" * 2000}, 400, "invalid_request"),
    "quantity string": ({"json": {"quantity": "1"}}, 400, "invalid_request"),
    "quantity float": ({"json": {"quantity": 1.5}}, 400, "invalid_request"),
    "quantity integral float": ({"json": {"quantity": 1.0}}, 400, "invalid_request"),
    "quantity bool": ({"json": {"quantity": True}}, 400, "invalid_request"),
    "quantity null": ({"json": {"quantity": None}}, 400, "invalid_request"),
    "quantity object": ({"json": {"quantity": {"n": 1}}}, 400, "invalid_request"),
    "quantity 0": ({"json": {"quantity": 0}}, 400, "invalid_request"),
    "quantity -1": ({"json": {"quantity": -1}}, 400, "invalid_request"),
    "quantity 10**30": ({"json": {"quantity": 10**30}}, 400, "invalid_request"),
    "quantity 2**63": ({"data": b'{"quantity": 9223372036854775808}'}, 400, "invalid_request"),
    "quantity over per_user_limit": ({"json": {"quantity": 3}}, 400, "invalid_request"),
    "bad idempotency key": (
        {"json": {"quantity": 1}, "headers": {**USER, "Idempotency-Key": "k" * 65}},
        400,
        "invalid_request",
    ),
    # size
    "body over 4 KiB": (
        {"json": {"quantity": 1, "pad": "x" * 4200}},
        413,
        "payload_too_large",
    ),
    "body over 64 KiB": ({"data": b" " * 70_000}, 413, "payload_too_large"),
    # identity
    "missing X-User-Id": ({"headers": {}}, 401, "unauthenticated"),
    "empty X-User-Id": ({"headers": {"X-User-Id": ""}}, 401, "unauthenticated"),
    "X-User-Id with a space": ({"headers": {"X-User-Id": "bad id"}}, 401, "unauthenticated"),
    "X-User-Id of 65 chars": ({"headers": {"X-User-Id": "u" * 65}}, 401, "unauthenticated"),
    "X-User-Id leading dash": ({"headers": {"X-User-Id": "-u"}}, 401, "unauthenticated"),
    "X-User-Id with a slash": ({"headers": {"X-User-Id": "a/b"}}, 401, "unauthenticated"),
}


@pytest.mark.parametrize(("kwargs", "status", "code"), BAD_BUYS.values(), ids=list(BAD_BUYS.keys()))
async def test_bad_buy(
    client: TestClient,
    redis: Redis,
    sale: str,
    kwargs: dict[str, Any],
    status: int,
    code: str,
) -> None:
    kwargs = {"headers": USER, **kwargs}
    resp = await client.post(BUY, **kwargs)
    assert await error_of(resp) == (status, code)
    # No refused request moved stock or queued an order.
    assert await redis.xlen(keys.stream(sale)) == 0
    assert await redis.hget(keys.sale(sale), "stock_left") == "10"


async def test_body_of_exactly_4_kib_is_accepted(client: TestClient, sale: str) -> None:
    body = b'{"quantity": 1}'
    body += b" " * (4096 - len(body))
    resp = await client.post(BUY, data=body, headers=USER)
    assert resp.status == 202


async def chunks(total: int, size: int = 1000) -> AsyncIterator[bytes]:
    """A body sent with Transfer-Encoding: chunked (no Content-Length)."""
    yield b'{"quantity": 1, "pad": "'
    for _ in range(total // size):
        yield b"x" * size
    yield b'"}'


@pytest.mark.parametrize("total", [5_000, 100_000])
async def test_oversized_chunked_body(
    client: TestClient, redis: Redis, sale: str, total: int
) -> None:
    resp = await client.post(BUY, data=chunks(total), headers=USER)
    assert "Content-Length" not in resp.request_info.headers
    assert await error_of(resp) == (413, "payload_too_large")
    assert await redis.xlen(keys.stream(sale)) == 0


async def test_small_chunked_body_is_accepted(client: TestClient, sale: str) -> None:
    resp = await client.post(BUY, data=chunks(100, 10), headers=USER)
    assert resp.status == 202


# --- ids in the path ----------------------------------------------------------------------

BAD_SALE_IDS = ["-bad", ".dot", "a" * 65, "a%20b", "a%2Fb", "caf%C3%A9", "a%00b", "a*b"]


@pytest.mark.parametrize("sale_id", BAD_SALE_IDS)
async def test_malformed_sale_id_in_path(client: TestClient, sale_id: str) -> None:
    resp = await client.post(f"/api/v1/sales/{sale_id}/orders", headers=USER)
    assert await error_of(resp) == (400, "invalid_request")
    resp = await client.get(f"/api/v1/sales/{sale_id}")
    assert await error_of(resp) == (400, "invalid_request")


async def test_malformed_path_beats_missing_identity(client: TestClient) -> None:
    resp = await client.post("/api/v1/sales/-bad/orders")
    assert await error_of(resp) == (400, "invalid_request")


async def test_identity_is_checked_before_the_sale_exists(client: TestClient) -> None:
    resp = await client.post("/api/v1/sales/nosuch/orders")
    assert await error_of(resp) == (401, "unauthenticated")


# --- routing ------------------------------------------------------------------------------

UNKNOWN_ROUTES = [
    ("GET", "/"),
    ("GET", "/api/v1/nope"),
    ("GET", "/api/v1/sales"),
    ("GET", "/api/v1/sales/s1/"),
    ("POST", "/api/v1/sales/s1/orders/extra"),
    ("GET", "/api/v2/sales/s1"),
    ("GET", "/admin/v1/salez"),
    ("DELETE", "/nothing/here"),
]


@pytest.mark.parametrize(("method", "path"), UNKNOWN_ROUTES)
async def test_unknown_route_is_json_404(client: TestClient, method: str, path: str) -> None:
    resp = await client.request(method, path, headers={**USER, **ADMIN})
    assert await error_of(resp) == (404, "not_found")


WRONG_METHODS = [
    ("GET", "/api/v1/sales/s1/orders", "POST"),
    ("PUT", "/api/v1/sales/s1/orders", "POST"),
    ("DELETE", "/api/v1/sales/s1", "GET"),
    ("POST", "/api/v1/sales/s1", "GET"),
    ("POST", "/api/v1/orders/s1.AAAAAAAAAAAAAAAA", "GET"),
    ("DELETE", "/admin/v1/sales/s1", "PUT"),
    ("POST", "/admin/v1/sales/s1", "PUT"),
    ("POST", "/healthz", "GET"),
]


@pytest.mark.parametrize(("method", "path", "allowed"), WRONG_METHODS)
async def test_wrong_method_is_json_405(
    client: TestClient, method: str, path: str, allowed: str
) -> None:
    resp = await client.request(method, path, headers={**USER, **ADMIN})
    assert await error_of(resp) == (405, "method_not_allowed")
    assert allowed in resp.headers["Allow"]


async def test_every_route_path_refuses_other_methods_with_json_405(client: TestClient) -> None:
    """The 405 fallback sits on every path, with the union of its methods in Allow."""
    app = client.server.app
    assert app is not None
    paths: dict[str, set[str]] = {}
    for resource in app.router.resources():
        if isinstance(resource, web.Resource) and resource.canonical != "/{tail}":
            methods = {r.method for r in resource} - {"*"}
            paths.setdefault(resource.canonical, set()).update(methods)
    assert len(paths) >= 10
    for path, methods in paths.items():
        concrete = path.replace("{sale_id}", "s1").replace("{order_id}", "s1.AAAAAAAAAAAAAAAA")
        concrete = concrete.replace("{name}", "app.js")
        resp = await client.request("PATCH", concrete, headers={**USER, **ADMIN})
        assert await error_of(resp) == (405, "method_not_allowed"), path
        assert set(resp.headers["Allow"].split(",")) == methods, path


# --- bugs: a JSON 500, never a traceback ------------------------------------------------------


async def test_a_bug_in_a_handler_is_a_json_500(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    app = client.server.app
    assert app is not None

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(app[RUNTIME].cache, "cached_view", broken)
    resp = await client.get("/api/v1/sales/s1")
    assert await error_of(resp) == (500, "internal")
    assert "a bug" not in await resp.text()
    assert "unhandled error on GET /api/v1/sales/s1" in caplog.text


async def test_a_bug_in_the_buy_handler_is_a_json_500(
    client: TestClient, sale: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """buy answers its own errors (no wrapper): the same JSON 500."""
    app = client.server.app
    assert app is not None

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(app[RUNTIME].scripts, "admit", broken)
    resp = await client.post(BUY, headers=USER)
    assert await error_of(resp) == (500, "internal")
    assert "a bug" not in await resp.text()
    assert "unhandled error on POST /api/v1/sales/s1/orders" in caplog.text
    # and the next buy, without the bug, is served
    monkeypatch.undo()
    assert (await client.post(BUY, headers=USER)).status == 202


# --- JWT identity ---------------------------------------------------------------------------

SECRET = "jwt-test-secret-" * 5  # 80 bytes: no key-length warning for any HS algorithm


@pytest.fixture
async def jwt_client(aiohttp_client: Any, settings: Settings, redis: Redis) -> TestClient:
    client: TestClient = await aiohttp_client(
        make_app(settings.replace(auth="jwt", jwt_secret=SECRET))
    )
    await create_sale(client, "s1", stock=10)
    return client


def token(claims: dict[str, Any], key: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(msgspec.json.encode(data)).rstrip(b"=").decode()


def soon() -> int:
    return int(time.time()) + 300


def tampered(good: str) -> str:
    """*good* with its payload swapped for another subject, signature kept."""
    header, _, signature = good.split(".")
    return f"{header}.{b64({'sub': 'mallory', 'exp': soon()})}.{signature}"


async def test_jwt_valid_token_buys_and_reads_the_order(jwt_client: TestClient) -> None:
    headers = bearer(token({"sub": "alice", "exp": soon()}))
    resp = await jwt_client.post(BUY, headers=headers)
    assert resp.status == 202
    location = resp.headers["Location"]
    got = await jwt_client.get(location, headers=headers)
    assert got.status == 200
    assert (await got.json())["user_id"] == "alice"
    # Another subject does not see it; a bare X-User-Id is no identity here.
    got = await jwt_client.get(location, headers=bearer(token({"sub": "bob", "exp": soon()})))
    assert await error_of(got) == (404, "order_not_found")
    got = await jwt_client.get(location, headers={"X-User-Id": "alice"})
    assert await error_of(got) == (401, "unauthenticated")


async def test_jwt_subject_is_the_user_for_limits(jwt_client: TestClient) -> None:
    headers = bearer(token({"sub": "alice", "exp": soon()}))
    assert (await jwt_client.post(BUY, headers=headers)).status == 202
    # A new token for the same subject is the same user.
    headers = bearer(token({"sub": "alice", "exp": soon(), "iat": int(time.time())}))
    resp = await jwt_client.post(BUY, headers=headers)
    assert await error_of(resp) == (409, "limit_reached")


#: built when the test runs, so that no token expires while the session runs.
BAD_TOKENS: dict[str, Callable[[], dict[str, str]]] = {
    "no Authorization": lambda: {},
    "X-User-Id only": lambda: {"X-User-Id": "alice"},
    "expired": lambda: bearer(token({"sub": "alice", "exp": int(time.time()) - 60})),
    "wrong secret": lambda: bearer(
        token({"sub": "alice", "exp": soon()}, key="another-secret-" * 5)
    ),
    "missing exp": lambda: bearer(token({"sub": "alice"})),
    "missing sub": lambda: bearer(token({"exp": soon()})),
    "sub malformed": lambda: bearer(token({"sub": "bad id", "exp": soon()})),
    "sub too long": lambda: bearer(token({"sub": "u" * 65, "exp": soon()})),
    "sub empty": lambda: bearer(token({"sub": "", "exp": soon()})),
    "sub not a string": lambda: bearer(token({"sub": 42, "exp": soon()})),
    "exp not a number": lambda: bearer(token({"sub": "alice", "exp": "tomorrow"})),
    "not yet valid": lambda: bearer(token({"sub": "alice", "exp": soon(), "nbf": soon()})),
    "HS512": lambda: bearer(token({"sub": "alice", "exp": soon()}, algorithm="HS512")),
    "alg none": lambda: bearer(
        b64({"alg": "none", "typ": "JWT"}) + "." + b64({"sub": "alice"}) + "."
    ),
    "alg none with exp": lambda: bearer(
        b64({"alg": "none", "typ": "JWT"}) + "." + b64({"sub": "alice", "exp": soon()}) + "."
    ),
    "garbage": lambda: bearer("not-a-jwt"),
    "three garbage parts": lambda: bearer("a.b.c"),
    "tampered payload": lambda: bearer(tampered(token({"sub": "alice", "exp": soon()}))),
    "basic scheme": lambda: {"Authorization": "Basic YWxpY2U6cHc="},
    "bearer without token": lambda: {"Authorization": "Bearer "},
    "token without scheme": lambda: {"Authorization": token({"sub": "alice", "exp": soon()})},
}


@pytest.mark.parametrize("make_headers", BAD_TOKENS.values(), ids=list(BAD_TOKENS.keys()))
async def test_jwt_bad_identity_is_401(
    jwt_client: TestClient, redis: Redis, make_headers: Callable[[], dict[str, str]]
) -> None:
    headers = make_headers()
    resp = await jwt_client.post(BUY, headers=headers)
    assert await error_of(resp) == (401, "unauthenticated")
    resp = await jwt_client.get("/api/v1/orders/s1.AAAAAAAAAAAAAAAA", headers=headers)
    assert await error_of(resp) == (401, "unauthenticated")
    assert await redis.xlen(keys.stream("s1")) == 0


# --- Redis unreachable ------------------------------------------------------------------------


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def down_client(aiohttp_client: Any, settings: Settings) -> TestClient:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    return await aiohttp_client(make_app(settings.replace(redis_url=url, redis_timeout=0.5)))  # type: ignore[no-any-return]


async def assert_unavailable(resp: Any) -> None:
    assert await error_of(resp) == (503, "unavailable")
    assert int(resp.headers["Retry-After"]) >= 1


async def test_redis_down_is_503_with_retry_after(down_client: TestClient) -> None:
    await assert_unavailable(await down_client.post(BUY, headers=USER))
    await assert_unavailable(await down_client.post(BUY, json={"quantity": 1}, headers=USER))
    await assert_unavailable(await down_client.get("/api/v1/sales/s1"))
    await assert_unavailable(
        await down_client.get("/api/v1/orders/s1.AAAAAAAAAAAAAAAA", headers=USER)
    )
    await assert_unavailable(await down_client.get("/admin/v1/sales/s1", headers=ADMIN))
    await assert_unavailable(
        await down_client.put("/admin/v1/sales/s1", json={"stock": 1}, headers=ADMIN)
    )


async def test_redis_down_still_validates_first(down_client: TestClient) -> None:
    resp = await down_client.post(BUY, data=b"[", headers=USER)
    assert await error_of(resp) == (400, "invalid_request")
    resp = await down_client.post(BUY)
    assert await error_of(resp) == (401, "unauthenticated")


async def test_redis_down_health_and_readiness(down_client: TestClient) -> None:
    resp = await down_client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok"}
    resp = await down_client.get("/readyz")
    await assert_unavailable(resp)


async def test_ready_when_redis_answers(client: TestClient) -> None:
    """The contrast to the test above: the same probes with Redis up."""
    deadline = time.monotonic() + 5.0
    while (resp := await client.get("/readyz")).status != 200:
        await error_of(resp)
        assert time.monotonic() < deadline, "never became ready"
        await asyncio.sleep(0.01)
    assert (await client.get("/healthz")).status == 200


async def test_not_ready_when_only_the_hot_path_client_is_cut_off(client: TestClient) -> None:
    """/readyz asks both Redis clients: with the pooled one fine and the
    auto-pipeline (every buy's path) unable to connect, it is not ready."""
    await test_ready_when_redis_answers(client)
    rt = client.app[RUNTIME]
    good = rt.clients
    cut = AutoPipeline.from_url(f"redis://127.0.0.1:{closed_port()}/0", timeout=0.5)
    rt.clients = RedisClients(good.redis, cut)
    try:
        await assert_unavailable(await client.get("/readyz"))
    finally:
        rt.clients = good
        await cut.aclose()
    assert (await client.get("/readyz")).status == 200


# --- compressed bodies (Content-Encoding) ------------------------------------------------------


def gzip_body(raw: bytes) -> dict[str, Any]:
    return {"data": gzip.compress(raw), "headers": {**USER, "Content-Encoding": "gzip"}}


async def test_gzip_body_is_read(client: TestClient, sale: str) -> None:
    resp = await client.post(BUY, **gzip_body(b'{"quantity": 2}'))
    assert resp.status == 202
    assert (await resp.json())["quantity"] == 2


@pytest.mark.parametrize(
    ("encoding", "data"),
    [("gzip", b"abcde"), ("deflate", b"\x00not deflate")],
)
async def test_undecodable_body_is_400(
    client: TestClient, redis: Redis, sale: str, encoding: str, data: bytes
) -> None:
    headers = {**USER, "Content-Encoding": encoding}
    resp = await client.post(BUY, data=data, headers=headers)
    assert await error_of(resp) == (400, "invalid_request")
    assert await redis.xlen(keys.stream(sale)) == 0


async def test_compressed_body_is_limited_after_decompression(
    client: TestClient, redis: Redis, sale: str
) -> None:
    """A few hundred bytes on the wire that inflate past 4 KiB, or past 64 KiB."""
    for size in (5_000, 1_000_000):
        kwargs = gzip_body(b'{"quantity": 1, "pad": "' + b"x" * size + b'"}')
        assert len(kwargs["data"]) < 4096
        resp = await client.post(BUY, **kwargs)
        assert await error_of(resp) == (413, "payload_too_large")
    assert await redis.xlen(keys.stream(sale)) == 0
