"""A 503 is the truth (docs/API.md §4): Redis stopped with SIGSTOP mid-crowd.

A stalled server keeps what it was sent and runs it when it resumes; the
gateway stops waiting after ``--redis-timeout``. Every buy answered
``unavailable`` must never become an order; every ``outcome_unknown`` names
the order it would be, and ``GET`` of that order tells the truth; every 202's
order exists; the stock adds up (§6).

Each test starts a Redis of its own (the session's server is not stopped),
and resumes and stops it in ``finally``.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from seckill.process.embedded import EmbeddedRedis
from seckill.redis import keys
from seckill.settings import Settings
from tests.helpers.api import ADMIN, ADMIN_TOKEN, create_sale, make_app
from tests.helpers.gateway import until

pytestmark = pytest.mark.fault

#: --redis-timeout: a stuck call fails 1 to 1.25 s after it was sent (the
#: watchdog looks every 0.25 s), and its settling gives up 1 s after that
TIMEOUT = 1.0
STOCK, USERS, IN_FLIGHT = 400, 700, 50
SALE = "stall"


@pytest.fixture
async def server(tmp_path: Path, redis_binary: str | None) -> AsyncIterator[EmbeddedRedis]:
    own = EmbeddedRedis(tmp_path / "stalled", redis_binary)
    own.start()
    try:
        yield own
    finally:
        if own.process is not None:
            os.kill(own.process.pid, signal.SIGCONT)
        own.stop()


async def crowd(
    client: TestClient, server: EmbeddedRedis, stop_for: float
) -> dict[str, tuple[int, dict[str, Any]]]:
    """Each of USERS buys once, IN_FLIGHT at a time; once 100 have been answered
    the server is stopped for *stop_for* seconds. Answers by user."""
    assert server.process is not None
    pid = server.process.pid
    answers: dict[str, tuple[int, dict[str, Any]]] = {}
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(user: str) -> None:
        async with gate:
            resp = await client.post(f"/api/v1/sales/{SALE}/orders", headers={"X-User-Id": user})
            answers[user] = (resp.status, await resp.json())

    async def stall() -> None:
        await until(lambda: len(answers) >= 100, 30, "the first answers")
        os.kill(pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(stop_for)  # the length of the stall is the point of the test
        finally:
            os.kill(pid, signal.SIGCONT)

    await asyncio.gather(stall(), *(one(f"u{i}") for i in range(USERS)))
    return answers


async def buy_counts(client: TestClient) -> dict[str, int]:
    resp = await client.get("/admin/v1/stats", headers=ADMIN)
    assert resp.status == 200
    return (await resp.json())["buys"]  # type: ignore[no-any-return]


async def settled(redis: Redis) -> None:
    """Wait until the server has read every connection the gateway closed to
    its end, so that every command ever sent has run (or been refused)."""

    async def only_ours() -> bool:
        return len(await redis.client_list()) == 1

    await until(only_ours, 15, "the server to close the gateway's connections")


@pytest.mark.parametrize(
    ("stop_for", "expected"),
    [
        # resumed before the settling gives up: the lost answers are settled
        (1.5, "unavailable"),
        # resumed later: the buys in flight at the stop cannot be settled in time
        (3.0, "outcome_unknown"),
    ],
)
async def test_a_buy_answered_unavailable_never_becomes_an_order(
    aiohttp_client: Any, server: EmbeddedRedis, tmp_path: Path, stop_for: float, expected: str
) -> None:
    settings = Settings(
        redis_url=server.url,
        admin_token=ADMIN_TOKEN,
        data_dir=tmp_path / "gateway",
        redis_timeout=TIMEOUT,
    )
    client: TestClient = await aiohttp_client(make_app(settings))
    await create_sale(client, SALE, stock=STOCK, per_user_limit=1)
    before = await buy_counts(client)
    answers = await crowd(client, server, stop_for)

    kinds = Counter(
        "admitted" if status == 202 else f"{status} {body['error']}"
        for status, body in answers.values()
    )
    assert set(kinds) <= {"admitted", "409 sold_out", "503 unavailable", "503 outcome_unknown"}
    assert kinds[f"503 {expected}"] > 0, kinds
    assert 0 < kinds["admitted"] <= STOCK, kinds
    # counted by outcome (the dashboard's and /metrics' figures)
    after = await buy_counts(client)
    grew = {o: n - before.get(o, 0) for o, n in after.items() if n != before.get(o, 0)}
    assert grew == {kind.split()[-1]: n for kind, n in kinds.items()}  # "503 unavailable" …

    # what GET says of an outcome_unknown's order, now that Redis answers again
    unknown: dict[str, bool] = {}
    for user, (status, body) in answers.items():
        if status == 503 and body["error"] == "outcome_unknown":
            assert set(body) == {"error", "message", "order_id"}
            assert body["order_id"] in body["message"]
            resp = await client.get(
                f"/api/v1/orders/{body['order_id']}", headers={"X-User-Id": user}
            )
            assert resp.status in {200, 404}, await resp.text()
            unknown[user] = resp.status == 200
    await client.close()

    redis = Redis.from_url(server.url, decode_responses=True)
    try:
        await settled(redis)
        units = {u: int(n) for u, n in (await redis.hgetall(keys.units(SALE))).items()}
        orders: dict[str, dict[str, str]] = {}
        async for key in redis.scan_iter(match=keys.order(SALE, "*"), count=1000):
            order = await redis.hgetall(key)
            orders[order["order_id"]] = order
        streamed = {e["order_id"]: e["user_id"] for _, e in await redis.xrange(keys.stream(SALE))}
        sale = await redis.hgetall(keys.sale(SALE))
    finally:
        await redis.aclose()

    owners = Counter(o["user_id"] for o in orders.values())
    assert max(owners.values()) == 1
    # every entry is an order of its user; an order leaves the stream once
    # delivered (XDEL), so every order still queued is there
    assert all(orders[i]["user_id"] == u for i, u in streamed.items())
    assert {i for i, o in orders.items() if o["status"] == "queued"} <= set(streamed)
    for user, (status, body) in answers.items():
        if status == 202:
            order = orders.get(body["order_id"])
            assert order is not None and order["user_id"] == user, (user, body)
            assert units.get(user) == 1
        elif body["error"] == "outcome_unknown" and unknown[user]:
            assert orders[body["order_id"]]["user_id"] == user
            assert units.get(user) == 1
        else:  # unavailable, sold_out, or outcome_unknown whose GET said 404
            assert user not in units, (user, status, body, orders.get(body.get("order_id", "")))
            assert owners[user] == 0, (user, status, body)
    # exact stock: every unit taken is one order of one answered user
    sold = STOCK - int(sale["stock_left"])
    assert sold == len(orders) == sum(units.values()) == kinds["admitted"] + sum(unknown.values())
    assert {o["status"] for o in orders.values()} <= {"queued", "confirmed"}


class ReplyDropper:
    """A TCP proxy in front of Redis. :meth:`drop` makes every connection open
    now lose Redis's replies from then on, while its commands still reach
    Redis and run: an answer lost on the way back. New connections work."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        assert parts.hostname and parts.port, upstream
        self.upstream = (parts.hostname, parts.port)
        #: the credentials go through the proxy as they are (AUTH is just bytes)
        self.userinfo = parts.netloc.rpartition("@")[0]
        self.open: list[dict[str, bool]] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        auth = f"{self.userinfo}@" if self.userinfo else ""
        return f"redis://{auth}127.0.0.1:{port}/0"

    def drop(self) -> None:
        for conn in self.open:
            conn["dropping"] = True

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        conn = {"dropping": False}
        self.open.append(conn)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, replies: bool) -> None:
            try:
                while data := await src.read(65536):
                    if not (replies and conn["dropping"]):
                        dst.write(data)
                        await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        for task in (
            asyncio.ensure_future(pump(reader, up_writer, replies=False)),
            asyncio.ensure_future(pump(up_reader, writer, replies=True)),
        ):
            self.tasks.add(task)


async def test_buys_whose_answers_were_lost_are_answered_with_their_orders(
    aiohttp_client: Any, server: EmbeddedRedis, tmp_path: Path
) -> None:
    """Redis runs 60 concurrent buys but their answers never come back: each
    admitted buy finds its order on a new connection and answers 202 with it."""
    proxy = ReplyDropper(server.url)
    url = await proxy.start()
    try:
        settings = Settings(
            redis_url=url, admin_token=ADMIN_TOKEN, data_dir=tmp_path / "gw", redis_timeout=0.5
        )
        client: TestClient = await aiohttp_client(make_app(settings))
        await create_sale(client, SALE, stock=40, per_user_limit=1)
        warm = await client.post(f"/api/v1/sales/{SALE}/orders", headers={"X-User-Id": "warm"})
        assert warm.status == 202
        proxy.drop()
        users = [f"lost{i}" for i in range(60)]
        resps = await asyncio.gather(
            *(client.post(f"/api/v1/sales/{SALE}/orders", headers={"X-User-Id": u}) for u in users)
        )
        answers = {u: (r.status, await r.json()) for u, r in zip(users, resps, strict=True)}
        await client.close()
    finally:
        await proxy.stop()

    # the 21 refused (sold out) lost their answers too: they find no order past
    # the deadline, and "unavailable" is the truth for them
    kinds = Counter(f"{s} {b.get('error', '')}".strip() for s, b in answers.values())
    assert kinds == {"202": 39, "503 unavailable": 21}, kinds
    redis = Redis.from_url(server.url, decode_responses=True)
    try:
        units = await redis.hgetall(keys.units(SALE))
        assert await redis.hget(keys.sale(SALE), "stock_left") == "0"
        for user, (status, body) in answers.items():
            if status == 202:
                order = await redis.hgetall(keys.order(SALE, body["order_id"]))
                assert order["user_id"] == user and order["quantity"] == "1"
                assert body["status"] in {"queued", "confirmed"}
                assert units[user] == "1"
            else:
                assert user not in units
        assert len(units) == 40 and await redis.xlen(keys.stream(SALE)) == 40
    finally:
        await redis.aclose()
