"""Connection hygiene: half-sent request heads are closed after --head-timeout,
idle keep-alive connections after --keepalive-timeout, and past
--max-connections a new connection gets a fast 503 (docs/API.md §1)."""

from __future__ import annotations

import asyncio
import json
import resource
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import redis as redis_sync

from tests.helpers.api import ADMIN
from tests.helpers.gateway import Gateway

pytestmark = pytest.mark.multiprocess

HALF_HEAD = b"POST /api/v1/sales/c/orders HTTP/1.1\r\nHost: x\r\nX-User-Id: slow"


@pytest.fixture
def flushed(redis_url: str) -> str:
    client = redis_sync.Redis.from_url(redis_url)
    client.flushall()
    client.close()
    return redis_url


@pytest.fixture
def gateway(flushed: str, tmp_path: Path) -> Iterator[Gateway]:
    flags = ["--redis-url", flushed, "--data-dir", str(tmp_path)]
    flags += ["--head-timeout", "1", "--keepalive-timeout", "4"]
    with Gateway(*flags) as gw:
        gw.wait_ready()
        yield gw
        assert gw.stop() == 0


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> float:
    """Seconds until the server closes the connection (EOF or reset)."""
    start = time.monotonic()
    try:
        async with asyncio.timeout(within):
            while await reader.read(4096):
                pass
    except ConnectionError:
        pass
    return time.monotonic() - start


async def scrape(url: str) -> str:
    """The text of GET /metrics."""
    async with aiohttp.ClientSession() as s, s.get(f"{url}/metrics") as r:
        assert r.status == 200
        return await r.text()


def metric(text: str, name: str) -> float:
    """The value of the unlabelled sample *name* in a /metrics text."""
    for line in text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


async def closed_at(reader: asyncio.StreamReader, within: float) -> float:
    """When (time.monotonic()) the server closes the connection."""
    await closed_by_server(reader, within)
    return time.monotonic()


async def buy(session: aiohttp.ClientSession, url: str, user: str) -> int:
    async with session.post(f"{url}/api/v1/sales/c/orders", headers={"X-User-Id": user}) as r:
        await r.read()
        return r.status


async def test_half_heads_are_closed_and_buys_still_work(gateway: Gateway) -> None:
    async with aiohttp.ClientSession() as s:
        r = await s.put(f"{gateway.url}/admin/v1/sales/c", json={"stock": 100}, headers=ADMIN)
        assert r.status == 201
    port = gateway.port
    conns = []
    opened = []  # when each connection was opened: its head timer started then
    for _ in range(300):
        opened.append(time.monotonic())
        conns.append(await asyncio.open_connection("127.0.0.1", port))
    try:
        for _, writer in conns:
            writer.write(HALF_HEAD)
        await asyncio.gather(*(w.drain() for _, w in conns))
        waits = asyncio.gather(*(closed_at(r, 15) for r, _ in conns))
        # meanwhile real customers are served
        async with aiohttp.ClientSession() as s:
            statuses = await asyncio.gather(*(buy(s, gateway.url, f"u{i}") for i in range(50)))
        assert statuses == [202] * 50
        took = [closed - start for closed, start in zip(await waits, opened, strict=True)]
    finally:
        for _, writer in conns:
            writer.close()
    # every one closed by the server after its head timeout of 1 s (not after
    # the keep-alive timeout of 4 s, which aiohttp alone would apply)
    assert max(took) < 3, max(took)
    assert min(took) > 0.8, min(took)
    assert "seckill_connections_head_timeouts_total 300.0" in await scrape(gateway.url)


async def test_keepalive_connection_lives_past_head_timeout_until_idle_timeout(
    gateway: Gateway,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    try:
        for _ in range(2):
            writer.write(request)
            assert (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).startswith(
                b"HTTP/1.1 200"
            )
            await reader.readexactly(len(b'{"status":"ok"}'))
            # idle past the head timeout: the keep-alive timeout (4 s) applies, not it
            await asyncio.sleep(1.5)
        took = await closed_by_server(reader, 10)
        assert 2 < took < 7, took
    finally:
        writer.close()


async def test_half_a_second_head_on_a_kept_alive_connection_is_closed(gateway: Gateway) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200")
        await reader.readexactly(len(b'{"status":"ok"}'))
        writer.write(HALF_HEAD)  # the next request, never finished
        await writer.drain()
        took = await closed_by_server(reader, 10)
        # the head timeout (1 s) from its first byte, not the keep-alive timeout (4 s)
        assert 0.8 < took < 3, took
    finally:
        writer.close()


async def test_connections_over_the_cap_get_a_fast_503(flushed: str, tmp_path: Path) -> None:
    flags = ["--redis-url", flushed, "--data-dir", str(tmp_path), "--max-connections", "20"]
    with Gateway(*flags) as gw:
        gw.wait_ready()
        idle = [await asyncio.open_connection("127.0.0.1", gw.port) for _ in range(20)]
        try:
            start = time.monotonic()
            reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 5)  # the whole answer, then EOF
            took = time.monotonic() - start
            writer.close()
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 503"), answer
            assert b"Retry-After: 1" in head
            assert json.loads(body)["error"] == "overloaded"
            assert took < 0.5, took
            assert "refused 1 new ones" in gw.output()
        finally:
            for _, w in idle:
                w.close()

        async def healthy() -> bool:
            async with aiohttp.ClientSession() as s, s.get(f"{gw.url}/healthz") as r:
                return r.status == 200

        deadline = time.monotonic() + 10
        while not await healthy():  # the idle ones are gone: room again
            assert time.monotonic() < deadline, "no room after the idle connections closed"
            await asyncio.sleep(0.05)
        # the probe, and maybe a health check while the idle ones were closing
        assert metric(await scrape(gw.url), "seckill_connections_refused_total") >= 1
        assert gw.stop() == 0


def open_files_limit(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return _limit(soft), _limit(hard)
    raise AssertionError("no open-files line")


def _limit(text: str) -> int:
    return resource.RLIM_INFINITY if text == "unlimited" else int(text)


def test_serve_raises_its_open_files_limit_to_the_hard_limit(flushed: str, tmp_path: Path) -> None:
    """To the hard limit; with none (unlimited), to seckill's ceiling, 2^20 (or
    the kernel's nr_open when that is lower: the raise is then refused)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
        target = 1 << 20 if nr_open >= 1 << 20 else min(256, soft)
    low = min(256, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))  # inherited by the gateway
    try:
        gw = Gateway("--redis-url", flushed, "--data-dir", str(tmp_path))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    with gw:
        gw.wait_ready()
        assert open_files_limit(gw.pid) == (target, hard)
        assert f"open files limit (RLIMIT_NOFILE soft): {target}" in gw.output()
        assert gw.stop() == 0
