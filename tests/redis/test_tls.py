"""``rediss://`` with its TLS options, against a real TLS-only Redis: both
clients of a process (the pooled one and the hot path's auto-pipeline) take
the options of one URL, with redis-py's defaults."""

from __future__ import annotations

import asyncio
import ssl
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError

from seckill.redis.autopipe import AutoPipeline, endpoint_of
from seckill.redis.client import connect
from seckill.redis.scripts import Admit, Scripts
from tests.helpers.tls import TlsRedis, redis_server_binary


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    server = TlsRedis(redis_server_binary(), tmp_path_factory.mktemp("tls"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


def url(server: TlsRedis, query: str) -> str:
    return f"rediss://127.0.0.1:{server.port}/0?{query}"


def test_the_url_options_reach_the_pipe_as_redis_py_reads_them(tmp_path: Path) -> None:
    from redis.asyncio import ConnectionPool

    default = endpoint_of(ConnectionPool.from_url("rediss://cache.example:6380/2"))
    assert (default.host, default.port, default.db) == ("cache.example", 6380, 2)
    assert default.tls is not None
    assert default.tls.verify_mode is ssl.CERT_REQUIRED and default.tls.check_hostname
    relaxed = endpoint_of(ConnectionPool.from_url("rediss://h/0?ssl_cert_reqs=none"))
    assert relaxed.tls is not None and relaxed.tls.verify_mode is ssl.CERT_NONE
    plain = endpoint_of(ConnectionPool.from_url("redis://u:p%40ss@h:7000/5"))
    assert plain.tls is None and (plain.username, plain.password, plain.db) == ("u", "p@ss", 5)
    unix = endpoint_of(ConnectionPool.from_url("unix:///run/redis.sock?db=3"))
    assert (unix.path, unix.db) == ("/run/redis.sock", 3)


async def test_both_clients_speak_tls_and_admit_exactly(tls_redis: TlsRedis) -> None:
    clients = connect(url(tls_redis, f"ssl_ca_certs={tls_redis.ca}"))
    try:
        await clients.ping()  # the pooled client and the pipe
        await clients.redis.flushall()
        scripts = Scripts(clients)
        await scripts.sale_put("tls", {"stock": 50, "per_user_limit": 1})
        results = await asyncio.gather(*(scripts.admit("tls", f"u{i}", 1) for i in range(300)))
        outcomes = Counter(r.outcome for r in results)
        assert outcomes == {Admit.OK: 50, Admit.SOLD_OUT: 250}
        assert await clients.redis.xlen("seckill:{tls}:orders") == 50
    finally:
        await clients.aclose()


async def test_an_unknown_certificate_is_refused_by_default(tls_redis: TlsRedis) -> None:
    """No CA given: redis-py's default (verify) holds for the pipe too."""
    pipe = AutoPipeline.from_url(url(tls_redis, ""), timeout=2.0)
    try:
        with pytest.raises(ConnectionError, match="certificate verify failed"):
            await pipe.execute("PING")
    finally:
        await pipe.aclose()


async def test_cert_reqs_none_is_honoured(tls_redis: TlsRedis) -> None:
    pipe = AutoPipeline.from_url(url(tls_redis, "ssl_cert_reqs=none"), timeout=2.0)
    try:
        assert await pipe.execute("PING") == "PONG"
    finally:
        await pipe.aclose()
