"""``--redis-url`` in cluster mode (docs/API.md §1): ``redis+cluster://`` and
``rediss+cluster://`` are valid; a plain ``redis://`` URL to a cluster node, or
a cluster URL to a plain server, is refused at start (exit 2, one line naming
the fix)."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio.connection import SSLConnection

from seckill.process.procs import free_port
from seckill.redis.client import connect
from seckill.redis.cluster_url import parse_cluster_url
from seckill.settings import ConfigError, Settings
from tests.helpers.cli import assert_one_line_error, run_module
from tests.helpers.cluster import LocalCluster
from tests.helpers.gateway import Gateway

pytestmark = pytest.mark.cluster


def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_module("seckill", "serve", "--port", str(free_port()), *args, env=env)


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://127.0.0.1:7000",
        "redis+cluster://10.0.0.1:7000,10.0.0.2:7000,node-3.example:7001",
        "rediss+cluster://user:p%40ss@cache.example:6380?ssl_cert_reqs=none",
        "redis+cluster://[::1]:7000,127.0.0.1:7001/0",
    ],
)
def test_cluster_urls_are_valid(url: str) -> None:
    Settings(redis_url=url).validated()
    parsed = parse_cluster_url(url)
    assert parsed is not None and parsed.seeds


def test_cluster_url_parts() -> None:
    parsed = parse_cluster_url("rediss+cluster://u:pw@a:1,b:2?ssl_cert_reqs=none")
    assert parsed is not None
    assert parsed.seeds == [("a", 1), ("b", 2)]
    assert parsed.url_of("b", 2) == "rediss://u:pw@b:2/0?ssl_cert_reqs=none"
    assert parse_cluster_url("redis://a:1") is None


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("redis+cluster://", "host:port"),
        ("redis+cluster://a:1,b", "'b'"),
        ("redis+cluster://a:70000", "host:port"),
        ("redis+cluster://a:1/3", "one database"),
        ("memcached://a:1", "redis+cluster://"),
    ],
)
def test_malformed_cluster_urls_are_refused(url: str, fragment: str) -> None:
    with pytest.raises(ConfigError, match="--redis-url") as refused:
        Settings(redis_url=url).validated()
    assert fragment in str(refused.value)


def test_a_plain_url_to_a_cluster_node_is_refused(local_cluster: LocalCluster) -> None:
    local_cluster.ensure_running()
    node = local_cluster.nodes[0]
    result = serve("--redis-url", f"redis://{node.address}/0")
    line = assert_one_line_error(result, "cluster_enabled:1")
    assert "redis+cluster://" in line
    # the same through the environment
    result = serve(env={"SECKILL_REDIS_URL": f"redis://{node.address}/0"})
    assert_one_line_error(result, "use --redis-url redis+cluster://")


def test_a_cluster_url_to_a_plain_server_is_refused(redis_url: str) -> None:
    plain = redis_url.replace("redis://", "redis+cluster://", 1).rsplit("/", 1)[0]
    assert_one_line_error(serve("--redis-url", plain), "not a cluster node")


def test_a_cluster_url_nobody_answers_is_refused() -> None:
    result = serve("--redis-url", f"redis+cluster://127.0.0.1:{free_port()}")
    assert_one_line_error(result, "cannot reach any node of the Redis Cluster")


async def test_serve_runs_on_a_cluster(local_cluster: LocalCluster, tmp_path: Path) -> None:
    """SECKILL_REDIS_URL=redis+cluster://… (one seed, a dead one first): the
    gateway serves, and a buy is admitted."""
    local_cluster.ensure_running()
    local_cluster.flush_all()
    seeds = f"127.0.0.1:{free_port()},{local_cluster.nodes[2].address}"
    with Gateway(
        "--data-dir", str(tmp_path), env={"SECKILL_REDIS_URL": f"redis+cluster://{seeds}"}
    ) as gw:
        gw.wait_ready()
        assert gw.shown_redis_url.startswith("redis+cluster://")
        sale = local_cluster.sale_on(0)
        status, _ = gw.admin("PUT", f"/admin/v1/sales/{sale}", {"stock": 1})
        assert status == 201
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"{gw.url}/api/v1/sales/{sale}/orders", headers={"X-User-Id": "u"}) as r,
        ):
            assert r.status == 202, await r.text()
        assert gw.stop() == 0


async def test_both_clients_take_the_urls_credentials_and_options() -> None:
    clients = connect("rediss+cluster://u:pw@10.0.0.1:7000,10.0.0.2:7000?ssl_cert_reqs=none")
    try:
        kwargs = clients.redis.connection_kwargs  # type: ignore[attr-defined]
        assert kwargs["connection_class"] is SSLConnection
        assert (kwargs["username"], kwargs["password"]) == ("u", "pw")
        assert kwargs["ssl_cert_reqs"] == "none"
        endpoint = clients.pipe.endpoint
        assert endpoint.tls is not None and endpoint.tls.verify_mode == ssl.CERT_NONE
        assert (endpoint.username, endpoint.password) == ("u", "pw")
        assert clients.pipe.cluster
    finally:
        await clients.aclose()
