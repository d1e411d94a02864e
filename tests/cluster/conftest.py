"""Cluster-mode fixtures: the app on the session's local cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from seckill.redis.client import RedisClients
from seckill.settings import Settings
from tests.helpers.api import ADMIN_TOKEN, make_app
from tests.helpers.cluster import LocalCluster


@pytest.fixture
def cluster_settings(cluster_url: str, tmp_path: Path) -> Settings:
    return Settings(
        redis_url=cluster_url, admin_token=ADMIN_TOKEN, data_dir=tmp_path, redis_timeout=1.0
    )


@pytest.fixture
async def cluster_client(
    aiohttp_client: object, cluster_settings: Settings, cluster_clients: RedisClients
) -> TestClient:  # type: ignore[type-arg]
    """The gateway in cluster mode (every primary flushed first)."""
    return await aiohttp_client(make_app(cluster_settings))  # type: ignore[operator, no-any-return]


@pytest.fixture
def sales(local_cluster: LocalCluster) -> list[str]:
    """One sale id per primary: sale i's keys live on node i."""
    return [local_cluster.sale_on(i) for i in range(len(local_cluster.nodes))]
