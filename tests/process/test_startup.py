"""Start-up safety: the data-dir lock comes before anything in the data dir is
touched, HS256 secrets of fewer than 32 bytes are refused, the embedded server
has a password of its own (mode 0600, off its command line), and /metrics can
require a bearer token."""

from __future__ import annotations

import re
import stat
import subprocess
from pathlib import Path

import aiohttp
import pytest
import redis as redis_sync

from seckill.process.embedded import EmbeddedError, EmbeddedRedis
from seckill.process.procs import children_of, cmdline, free_port
from tests.helpers.cli import assert_one_line_error, run_module
from tests.helpers.gateway import Gateway, until

pytestmark = pytest.mark.multiprocess

USER = {"X-User-Id": "u1"}
#: the 404 buy each test makes, once /metrics has it (counts are flushed every second)
COUNTED = re.compile(r'seckill_buy_requests_total\{[^}]*outcome="not_found"[^}]*\} 1\.0')


async def scrape(url: str, headers: dict[str, str] | None = None) -> str:
    async with aiohttp.ClientSession() as s, s.get(f"{url}/metrics", headers=headers) as r:
        assert r.status == 200
        return await r.text()


async def counted(url: str, headers: dict[str, str] | None = None) -> bool:
    return COUNTED.search(await scrape(url, headers)) is not None


def seckill(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_module("seckill", *args, env=env)


async def test_a_second_serve_leaves_the_running_gateways_data_dir_alone(
    tmp_path: Path, redis_binary: str | None
) -> None:
    extra = ["--redis-server", redis_binary] if redis_binary else []
    with Gateway("--data-dir", str(tmp_path), *extra) as first:
        first.wait_ready()
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{first.url}/api/v1/sales/none/orders", headers=USER) as r:
                assert r.status == 404  # counted: outcome not_found
            await until(lambda: counted(first.url), 5, "the buy in /metrics")
        metrics = tmp_path / "metrics"
        files = {p.name: p.stat().st_ino for p in metrics.iterdir()}
        assert files, "the first gateway keeps its metrics there"

        second = seckill("serve", "--port", str(free_port()), "--data-dir", str(tmp_path), *extra)
        assert_one_line_error(second, "in use")

        assert {p.name: p.stat().st_ino for p in metrics.iterdir()} == files
        assert await counted(first.url)  # the count is still in its files
        assert first.stop() == 0


async def test_gateways_on_one_external_redis_may_share_a_data_dir(
    tmp_path: Path, redis_url: str, redis_binary: str | None
) -> None:
    """docker-compose: two replicas, one volume (their SQLite sink): both run,
    each counts into its own metrics dir; an embedded-server gateway is kept off."""
    flags = ["--redis-url", redis_url, "--data-dir", str(tmp_path)]
    with Gateway(*flags) as one, Gateway(*flags) as two:
        one.wait_ready()
        two.wait_ready()
        async with (
            aiohttp.ClientSession() as s,
            s.post(f"{one.url}/api/v1/sales/none/orders", headers=USER) as r,
        ):
            assert r.status == 404
        await until(lambda: counted(one.url), 5, "the buy in the first gateway's /metrics")
        assert not await counted(two.url)  # its own figures, not the other's
        dirs = sorted(p.name for p in (tmp_path / "metrics").iterdir() if p.is_dir())
        assert len(dirs) == 2 and all(str(gw.port) in " ".join(dirs) for gw in (one, two))

        extra = ["--redis-server", redis_binary] if redis_binary else []
        embedded = seckill("serve", "--port", str(free_port()), "--data-dir", str(tmp_path), *extra)
        assert_one_line_error(embedded, "in use")
        assert await counted(one.url)
        assert one.stop() == 0
        assert two.stop() == 0


@pytest.mark.parametrize("length", [5, 31])
def test_short_jwt_secrets_are_refused(length: int) -> None:
    result = seckill(
        "serve", "--port", str(free_port()), "--auth", "jwt",
        env={"SECKILL_JWT_SECRET": "k" * length},
    )  # fmt: skip
    assert_one_line_error(result, "SECKILL_JWT_SECRET must be at least 32 bytes")


def test_short_metrics_token_is_refused() -> None:
    result = seckill("serve", "--port", str(free_port()), "--metrics-token", "short")
    assert_one_line_error(result, "--metrics-token")


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--head-timeout", "0"), ("--keepalive-timeout", "-1"), ("--max-connections", "0")],
)
def test_bad_connection_flags_are_refused(flag: str, value: str) -> None:
    assert_one_line_error(seckill("serve", "--port", str(free_port()), flag, value), flag)


def test_embedded_server_refuses_clients_without_its_password(
    tmp_path: Path, redis_binary: str | None
) -> None:
    extra = ["--redis-server", redis_binary] if redis_binary else []
    with Gateway("--data-dir", str(tmp_path), *extra) as gw:
        gw.wait_ready()
        password_file = tmp_path / "redis" / "password"
        mode = stat.S_IMODE(password_file.stat().st_mode)
        assert mode == 0o600, oct(mode)
        password = password_file.read_text().strip()
        assert len(password) >= 32
        # the launcher (the CLI's tools) found it: its URL works
        url = gw.redis_url
        assert f":{password}@" in url
        port = int(url.rsplit(":", 1)[1].split("/")[0])

        stranger = redis_sync.Redis(host="127.0.0.1", port=port, socket_timeout=5)
        try:
            with pytest.raises(redis_sync.AuthenticationError):
                stranger.set("seckill:sale:x", "mine")
        finally:
            stranger.close()
        owner = redis_sync.Redis.from_url(url, socket_timeout=5)
        try:
            assert owner.ping()
        finally:
            owner.close()
        # not on the server's command line, which any local user can read
        servers = [p for p in children_of(gw.proc.pid) if "server" in cmdline(p).split(" ")[0]]
        assert servers and all(password not in cmdline(p) for p in servers)
        assert gw.stop() == 0

    # the same password on the next start
    with Gateway("--data-dir", str(tmp_path), *extra) as again:
        again.wait_ready()
        assert f":{password}@" in again.redis_url
        assert again.stop() == 0


async def test_metrics_token_is_required_when_set(tmp_path: Path, redis_url: str) -> None:
    token = "metrics-token-0123456789"
    flags = ["--redis-url", redis_url, "--data-dir", str(tmp_path), "--metrics-token", token]
    with Gateway(*flags) as gw:
        gw.wait_ready()
        async with aiohttp.ClientSession() as s:
            async with s.post(f"{gw.url}/api/v1/sales/none/orders", headers=USER) as r:
                assert r.status == 404
            for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}):
                async with s.get(f"{gw.url}/metrics", headers=headers) as r:
                    assert r.status == 401
                    assert (await r.json())["error"] == "unauthenticated"
            headers = {"Authorization": f"Bearer {token}"}
            await until(lambda: counted(gw.url, headers), 5, "the buy in /metrics")
            async with s.get(f"{gw.url}/healthz") as r:  # probes need no token
                assert r.status == 200
        assert gw.stop() == 0


def test_an_embedded_server_refuses_a_data_dir_another_one_runs_on(
    tmp_path: Path, redis_binary: str | None
) -> None:
    """Its own flock (the one lock_file of seckill.process.datadir): a second
    server on the same files is refused; once the first stops, it starts."""
    first = EmbeddedRedis(tmp_path, redis_binary)
    first.start()
    try:
        with pytest.raises(EmbeddedError, match="is in use by another running seckill serve"):
            EmbeddedRedis(tmp_path, redis_binary).start()
    finally:
        first.stop()
    again = EmbeddedRedis(tmp_path, redis_binary)
    again.start()
    again.stop()
