"""Limits across two gateway processes, and a Redis that stops answering."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from redis.asyncio import Redis

from seckill.process.embedded import EmbeddedRedis
from tests.helpers.api import ADMIN
from tests.helpers.gateway import Gateway, blast, until, wait_for


@pytest.fixture
def gateway(redis_url: str, redis: Redis) -> Iterator[Gateway]:
    with Gateway("--processes", "2", "--redis-url", redis_url) as gw:
        gw.wait_ready()
        yield gw
        assert gw.stop() == 0


async def admin(url: str, method: str, path: str, body: object = None) -> dict:  # type: ignore[type-arg]
    async with aiohttp.ClientSession() as s:
        resp = await s.request(method, f"{url}{path}", json=body, headers=ADMIN)
        assert resp.status in (200, 201), await resp.text()
        return await resp.json()  # type: ignore[no-any-return]


async def in_force(gateway: Gateway, limits_json: str, processes: int = 2) -> None:
    """Until every process logged the new limits in force: the contract gives
    each up to 1 s, and a bound counted from the PUT would include that window."""
    line = "limits now in force here: "
    await until(
        lambda: (
            sum(1 for text in gateway.output().splitlines() if line in text and limits_json in text)
            == processes
        ),
        within=10,  # 1 s by the contract; a busy 2-core machine gets room
        what=f"{processes} processes to apply {limits_json}",
    )


async def evalsha_calls(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


@pytest.mark.multiprocess
async def test_two_processes_share_one_limit(gateway: Gateway, redis: Redis) -> None:
    """A blast at far over the rate from many users, over 2 processes, admits
    within rate x T + burst, and most refusals never reach Redis."""
    # rate 20/s, bounds from the blast's own wall time, no slack: it flaked
    # once at 40/s with a bound from the last request's send time + 2 tokens
    # (an admission runs after its send) on a busy 2-core machine
    rate, burst, seconds = 20, 10, 3.0
    await admin(gateway.url, "PUT", "/admin/v1/sales/lim", {"stock": 10**6})
    await admin(gateway.url, "PUT", "/admin/v1/limits", {"rate": rate, "burst": burst})
    await in_force(gateway, '{"rate":20.0,"burst":10,')
    before = await evalsha_calls(redis)
    loop = asyncio.get_running_loop()
    start = loop.time()
    results = await blast(gateway.url, "lim", seconds, concurrency=64)
    wall = loop.time() - start  # every admission happened within it
    script_calls = await evalsha_calls(redis) - before
    statuses = Counter(status for _, status in results)
    admitted, refused = statuses[202], statuses[429]
    assert set(statuses) <= {202, 429}
    assert len(results) >= 10 * rate * seconds, "the blast must offer >= 10x the rate"
    # the exact upper bound (burst + rate x the blast's wall time), and close to it
    assert admitted <= burst + int(rate * wall), (admitted, wall)
    assert admitted >= 0.8 * rate * seconds, (admitted, wall)
    refused_by_redis = script_calls - admitted
    assert refused_by_redis >= 0
    local_share = 1 - refused_by_redis / refused
    print(f"\nadmitted {admitted}/{len(results)}; refusals answered locally: {local_share:.0%}")
    assert local_share >= 0.8


@pytest.mark.multiprocess
async def test_one_user_is_held_to_its_bucket(gateway: Gateway) -> None:
    await admin(gateway.url, "PUT", "/admin/v1/sales/pu", {"stock": 10**6, "per_user_limit": 10**6})
    await admin(gateway.url, "PUT", "/admin/v1/limits", {"per_user_rate": 5, "per_user_burst": 2})
    await in_force(gateway, '"per_user_rate":5.0,"per_user_burst":2}')
    loop = asyncio.get_running_loop()
    start = loop.time()
    hog, others = await asyncio.gather(
        blast(gateway.url, "pu", 2.0, concurrency=32, user="hog"),
        blast(gateway.url, "pu", 2.0, concurrency=4, prefix="other"),
    )
    # every admission of the hog happened within the blast's wall time: the
    # bucket (rate 5/s, burst 2) admits at most burst + rate x that, exactly
    wall = loop.time() - start
    hog_ok = sum(1 for _, s in hog if s == 202)
    assert hog_ok <= 2 + int(5 * wall), (hog_ok, wall)
    assert hog_ok >= 5 * 2.0 * 0.5, hog_ok  # and the bucket does refill
    assert len(hog) > 10 * hog_ok
    assert {s for _, s in others} == {202}  # everyone else is not slowed by the hog


@pytest.mark.multiprocess
async def test_live_change_follows_within_a_second(gateway: Gateway) -> None:
    await admin(gateway.url, "PUT", "/admin/v1/sales/live", {"stock": 10**6})
    await admin(gateway.url, "PUT", "/admin/v1/limits", {"rate": 20, "burst": 1})
    await in_force(gateway, '{"rate":20.0,"burst":1,')

    async def raise_limit() -> None:
        await asyncio.sleep(2.0)  # part of the scenario: change the limit mid-blast
        await admin(gateway.url, "PUT", "/admin/v1/limits", {"rate": 100})

    results, _ = await asyncio.gather(
        blast(gateway.url, "live", 4.5, concurrency=48), raise_limit()
    )
    before = sum(1 for t, s in results if s == 202 and 0.5 <= t < 2.0)
    after = sum(1 for t, s in results if s == 202 and 3.0 <= t < 4.5)
    assert before <= 20 * 1.5 + 2
    # 20/s before, 100/s after: at least half the new rate shows (CI machines are busy)
    assert after >= 0.5 * 100 * 1.5, (before, after)


@pytest.mark.multiprocess
async def test_listener_rereads_limits_after_reconnect(gateway: Gateway, redis: Redis) -> None:
    """A change made while a process's pub/sub connection was down is picked up
    when it reconnects (here: written straight to Redis, no announcement)."""
    await admin(gateway.url, "PUT", "/admin/v1/sales/rc", {"stock": 10**6})
    await redis.hset("seckill:limits", mapping={"rate": "0.001", "burst": "1"})
    await redis.client_kill_filter(_type="pubsub")

    async def limited() -> bool:
        results = await blast(gateway.url, "rc", 0.3, concurrency=4, prefix="rc")
        return Counter(s for _, s in results)[202] <= 1

    deadline = asyncio.get_running_loop().time() + 10
    while not await limited():
        assert asyncio.get_running_loop().time() < deadline, "limits not re-read"


@pytest.mark.fault
async def test_redis_down_answers_503_fast_and_recovers(
    tmp_path: Path, redis_binary: str | None
) -> None:
    server = EmbeddedRedis(tmp_path, redis_binary)
    url = server.start()
    try:
        with Gateway("--redis-url", url, "--redis-timeout", "0.5") as gw:
            gw.wait_ready()
            await admin(gw.url, "PUT", "/admin/v1/sales/d", {"stock": 100})
            assert server.process is not None
            pid = server.process.pid

            async def buy(user: str) -> tuple[int, dict, float]:  # type: ignore[type-arg]
                loop = asyncio.get_running_loop()
                start = loop.time()
                async with aiohttp.ClientSession() as s:
                    resp = await s.post(
                        f"{gw.url}/api/v1/sales/d/orders", headers={"X-User-Id": user}
                    )
                    return resp.status, await resp.json(), loop.time() - start

            assert (await buy("u0"))[0] == 202
            os.kill(pid, signal.SIGSTOP)  # Redis hangs: calls time out
            try:
                answers = await asyncio.gather(*(buy(f"h{i}") for i in range(20)))
                for status, body, took in answers:
                    # a script sent to the hung server cannot be settled while it
                    # hangs: outcome_unknown (docs/API.md §4); one that never
                    # left the gateway: unavailable
                    assert (status, body["error"]) in {
                        (503, "unavailable"),
                        (503, "outcome_unknown"),
                    }
                    assert took < 3.0
            finally:
                os.kill(pid, signal.SIGCONT)
            u1 = await buy("u1")
            assert u1[0] == 202, u1
            server.stop()  # Redis gone: connections refused
            status, body, _ = await buy("u2")
            assert (status, body["error"]) == (503, "unavailable")
            server.fixed_port = server.port
            server.start()  # back on the same port, same data
            deadline = asyncio.get_running_loop().time() + 10
            while (await buy("u3"))[0] != 202:
                assert asyncio.get_running_loop().time() < deadline, "did not recover"
                await asyncio.sleep(0.05)  # a poll, not a spin: Redis needs the cores
            wait_for(gw.ready, 10, "readyz after Redis came back")
            assert gw.stop() == 0
    finally:
        server.stop()
