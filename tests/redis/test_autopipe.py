"""The auto-pipelined hot path: same answers as the pooled client, errors stay
with their own caller, timeouts and lost connections fail fast."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import uvloop
from redis.asyncio import Redis
from redis.exceptions import ConnectionError, ResponseError, TimeoutError

from seckill.process.embedded import EmbeddedRedis
from seckill.redis import keys
from seckill.redis.autopipe import AutoPipeline, NotSent, encode
from seckill.redis.client import RedisClients, connect
from seckill.redis.scripts import Admit, Scripts
from tests.helpers.gateway import until


@pytest.fixture
def pipe(clients: RedisClients) -> AutoPipeline:
    return clients.pipe


def test_encode() -> None:
    assert encode(("SET", "k", 12, b"\x00v", 1.5, "")) == (
        b"*6\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n$2\r\n\x00v\r\n$3\r\n1.5\r\n$0\r\n\r\n"
    )


async def burst(scripts: Scripts, sale: str) -> Counter[Admit]:
    await scripts.sale_put(sale, {"stock": 100, "per_user_limit": 1})
    users = [f"user{i % 300}" for i in range(1000)]
    results = await asyncio.gather(*(scripts.admit(sale, u, 1) for u in users))
    return Counter(r.outcome for r in results)


async def test_pipelined_admits_sell_exactly_the_stock(redis: Redis, scripts: Scripts) -> None:
    """1,000 concurrent admits from 300 users, many in one write: exactly the stock."""
    pipelined = await burst(scripts, "piped")
    assert pipelined[Admit.OK] == 100
    # which refusal a loser gets (sold_out or limit_reached) depends on arrival order
    assert set(pipelined) == {Admit.OK, Admit.SOLD_OUT, Admit.LIMIT_REACHED}
    assert sum(pipelined.values()) == 1000
    assert await redis.xlen(keys.stream("piped")) == 100
    assert await redis.hget(keys.sale("piped"), "stock_left") == "0"
    assert len(await redis.hgetall(keys.units("piped"))) == 100


async def test_an_error_fails_only_its_own_call(redis: Redis, pipe: AutoPipeline) -> None:
    await redis.set("text", "x")
    calls = [pipe.execute("INCR", f"n{i}") for i in range(50)]
    calls.insert(25, pipe.execute("INCR", "text"))  # WRONGTYPE-ish: not an integer
    results = await asyncio.gather(*calls, return_exceptions=True)
    errors = [r for r in results if isinstance(r, Exception)]
    assert len(errors) == 1 and isinstance(errors[0], ResponseError)
    assert results[25] is errors[0]
    assert [r for r in results if not isinstance(r, Exception)] == [1] * 50
    assert await pipe.execute("PING") == "PONG"  # still in step


async def script_loads(redis: Redis) -> int:
    stats = await redis.info("commandstats")
    return int(stats.get("cmdstat_script|load", {}).get("calls", 0))


async def test_noscript_is_reloaded_once_for_a_crowd(redis: Redis, scripts: Scripts) -> None:
    """A crowd at a Redis that lost its scripts (a restart): every buy finds
    admit.lua missing, one SCRIPT LOAD serves them all, every buy is answered."""
    await scripts.sale_put("s", {"stock": 5})
    await redis.script_flush()
    before = await script_loads(redis)
    results = await asyncio.gather(*(scripts.admit("s", f"u{i}", 1) for i in range(200)))
    assert Counter(r.outcome for r in results) == {Admit.OK: 5, Admit.SOLD_OUT: 195}
    assert await script_loads(redis) - before == 1


async def test_lost_connection_fails_waiters_and_reconnects(
    redis: Redis, pipe: AutoPipeline
) -> None:
    assert await pipe.execute("PING") == "PONG"
    blocked = asyncio.ensure_future(pipe.execute("BLPOP", "nothing", 5))

    async def blocked_client() -> str | None:
        clients = await redis.client_list()
        return next((c["id"] for c in clients if c.get("cmd") == "blpop"), None)

    await until(blocked_client, 5, "the BLPOP to reach Redis")
    await redis.client_kill_filter(_id=await blocked_client())
    with pytest.raises(ConnectionError):
        await blocked
    assert await pipe.execute("PING") == "PONG"  # a new connection


async def test_a_command_failed_before_its_write_is_not_sent(pipe: AutoPipeline) -> None:
    """Failed with its connection: a command already written may have run
    (ConnectionError), one still in the buffer did not (NotSent)."""
    assert await pipe.execute("PING") == "PONG"
    written = asyncio.ensure_future(pipe.execute("BLPOP", "nothing", 5))
    await asyncio.sleep(0)  # the flush
    await asyncio.sleep(0)
    conn = pipe._conn
    assert conn is not None and not conn.buffer
    buffered = pipe.execute("INCR", "never")  # buffered; written at the next loop turn
    assert conn.buffer
    conn.fail(ConnectionError("cut"))
    with pytest.raises(ConnectionError) as lost:
        await written
    assert not isinstance(lost.value, NotSent)
    with pytest.raises(NotSent):
        await buffered
    assert await pipe.execute("GET", "never") is None


async def test_the_pipeline_reads_redis_clock(pipe: AutoPipeline) -> None:
    await pipe.execute("PING")
    seconds, micros = await pipe.execute("TIME")
    redis_ms = int(seconds) * 1000 + int(micros) / 1000
    assert abs(pipe.redis_now_ms() - redis_ms) < 50


async def test_db_from_the_url(redis: Redis, redis_url: str) -> None:
    base = redis_url.rsplit("/", 1)[0]
    other = connect(f"{base}/3")
    try:
        await other.pipe.execute("SET", "in-db-3", "yes")
        assert await other.redis.get("in-db-3") == "yes"
        assert await redis.get("in-db-3") is None
    finally:
        await other.redis.flushdb()
        await other.aclose()


async def test_unreachable_is_a_connection_error() -> None:
    from seckill.process.procs import free_port

    pipe = AutoPipeline.from_url(f"redis://127.0.0.1:{free_port()}/0", timeout=1.0)
    with pytest.raises(ConnectionError):
        await pipe.execute("PING")
    await pipe.aclose()


async def test_aclose_while_connecting_lets_go_of_the_socket() -> None:
    """A client closed while its connection is still being set up (AUTH not
    answered yet): the caller fails, and the socket is closed, not left to
    the garbage collector (seen as an unclosed transport at a later test)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        port = listener.getsockname()[1]
        pipe = AutoPipeline.from_url(f"redis://:secret@127.0.0.1:{port}/0", timeout=5.0)
        call = asyncio.ensure_future(pipe.execute("PING"))
        accepted: list[socket.socket] = []

        def arrived() -> bool:
            with contextlib.suppress(BlockingIOError):
                accepted.append(listener.accept()[0])
            return bool(accepted)

        await until(arrived, 5, "the client to connect")
        (server_side,) = accepted
        with server_side:
            # not blocking: the client's AUTH is written by this same event loop
            server_side.setblocking(False)

            def auth_arrived() -> bytes:
                with contextlib.suppress(BlockingIOError):
                    return server_side.recv(64, socket.MSG_PEEK)
                return b""

            await until(auth_arrived, 5, "the AUTH")
            await pipe.aclose()
            with pytest.raises(ConnectionError):
                await call
            server_side.settimeout(5)
            while server_side.recv(64):  # the AUTH, then EOF: the client closed it
                pass


async def test_an_attempt_that_failed_after_its_callers_left_does_not_fail_the_next() -> None:
    """A caller gives up on a connection attempt (its own timeout); the attempt
    later fails by itself (AUTH never answered). The next caller gets an
    attempt of its own, not the stale failure."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        port = listener.getsockname()[1]
        pipe = AutoPipeline.from_url(f"redis://:secret@127.0.0.1:{port}/0", timeout=0.2)
        accepted: list[socket.socket] = []

        def arrivals(n: int) -> Callable[[], bool]:
            def arrived() -> bool:
                with contextlib.suppress(BlockingIOError):
                    accepted.append(listener.accept()[0])
                return len(accepted) >= n

            return arrived

        try:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(pipe.execute("PING"), 0.05)
            await until(arrivals(1), 5, "the first connection attempt")
            first = accepted[0]
            first.setblocking(False)

            def closed_by_client() -> bool:  # the AUTH, then EOF
                with contextlib.suppress(BlockingIOError):
                    return first.recv(64) == b""
                return False

            await until(closed_by_client, 5, "the attempt to fail by itself")
            second = asyncio.ensure_future(pipe.execute("PING"))
            await until(arrivals(2), 5, "a second connection attempt")
            with pytest.raises(NotSent):
                await second
        finally:
            for sock in accepted:
                sock.close()
            await pipe.aclose()


@pytest.mark.fault
async def test_hung_server_times_out_everyone_waiting(
    tmp_path: Path, redis_binary: str | None
) -> None:
    server = EmbeddedRedis(tmp_path, redis_binary)
    url = server.start()
    pipe = AutoPipeline.from_url(url, timeout=0.5)
    try:
        assert await pipe.execute("PING") == "PONG"
        assert server.process is not None
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            loop = asyncio.get_running_loop()
            start = loop.time()
            results = await asyncio.gather(
                *(pipe.execute("PING") for _ in range(20)), return_exceptions=True
            )
            assert all(isinstance(r, TimeoutError) for r in results)
            assert loop.time() - start < 2.0
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        assert await pipe.execute("PING") == "PONG"  # a new connection
    finally:
        await pipe.aclose()
        server.stop()


def test_under_uvloop(redis_url: str) -> None:
    """The gateway runs on uvloop, whose transports differ from asyncio's."""

    async def scenario() -> Counter[Admit]:
        clients = connect(redis_url)
        try:
            await clients.redis.flushall()
            return await burst(Scripts(clients), "uv")
        finally:
            await clients.aclose()

    outcomes = uvloop.run(scenario())
    assert outcomes[Admit.OK] == 100
    assert sum(outcomes.values()) == 1000
