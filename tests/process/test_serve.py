"""``seckill serve`` as a user runs it: real processes, real ports, real Redis."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import redis as redis_sync

from seckill.process.procs import alive, children_of, cmdline, free_port
from tests.helpers.api import ADMIN, ADMIN_TOKEN
from tests.helpers.cli import assert_one_line_error, run_module
from tests.helpers.gateway import Gateway, wait_for

pytestmark = pytest.mark.multiprocess


def seckill(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_module("seckill", *args, env=env, keep_seckill_env=True)


@pytest.fixture(scope="module")
def gateway2(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Two gateway processes on one port, on the session's Redis (flushed first)."""
    flush = redis_sync.Redis.from_url(redis_url)
    flush.flushall()
    flush.close()
    data = tmp_path_factory.mktemp("gw2")
    with Gateway("--processes", "2", "--redis-url", redis_url, "--data-dir", str(data)) as gw:
        gw.wait_ready()
        yield gw
        assert gw.stop() == 0


async def crowd(url: str, sale: str, users: list[str]) -> list[tuple[str, int, dict]]:  # type: ignore[type-arg]
    conn = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def buy(user: str) -> tuple[str, int, dict]:  # type: ignore[type-arg]
            async with session.post(
                f"{url}/api/v1/sales/{sale}/orders", headers={"X-User-Id": user}
            ) as resp:
                return user, resp.status, await resp.json()

        return await asyncio.gather(*(buy(u) for u in users))


async def test_two_processes_sell_exactly_the_stock(gateway2: Gateway) -> None:
    assert len(children_of(gateway2.proc.pid)) >= 2  # the two gateway children
    async with aiohttp.ClientSession() as s:
        resp = await s.put(
            f"{gateway2.url}/admin/v1/sales/crowd", json={"stock": 200}, headers=ADMIN
        )
        assert resp.status == 201
    users = [f"user{i % 1000}" for i in range(3000)]
    results = await crowd(gateway2.url, "crowd", users)
    admitted = [u for u, status, _ in results if status == 202]
    assert len(admitted) == 200
    assert len(set(admitted)) == 200
    refusals = Counter(body["error"] for _, status, body in results if status != 202)
    assert set(refusals) <= {"sold_out", "limit_reached"}
    assert sum(refusals.values()) == 2800
    sale = await _admin_sale(gateway2.url, "crowd")
    assert sale["stock_left"] == 0
    assert sale["orders"]["queued"] + sale["orders"]["confirmed"] == 200
    # the pipeline drains every admitted order into the SQLite sink, once each
    deadline = asyncio.get_running_loop().time() + 30
    while (await _admin_sale(gateway2.url, "crowd"))["orders"]["confirmed"] < 200:
        assert asyncio.get_running_loop().time() < deadline, "orders not confirmed"
    with sqlite3.connect(gateway2.data_dir / "orders.db") as db:
        rows = db.execute("SELECT user_id FROM orders WHERE sale_id = 'crowd'").fetchall()
    assert sorted(u for (u,) in rows) == sorted(admitted)


def test_cli_sale_create_and_show(gateway2: Gateway) -> None:
    env = {"SECKILL_URL": gateway2.url, "SECKILL_ADMIN_TOKEN": ADMIN_TOKEN}
    made = seckill("sale", "create", "cli1", "--stock", "5", "--per-user-limit", "2", env=env)
    assert made.returncode == 0, made.stderr
    assert made.stdout.startswith("created") and "5 of 5 left" in made.stdout
    shown = seckill("sale", "show", "cli1", "--json", env=env)
    assert shown.returncode == 0
    assert '"per_user_limit": 2' in shown.stdout and '"backlog": 0' in shown.stdout
    again = seckill("sale", "create", "cli1", "--stock", "6", env=env)
    assert again.stdout.startswith("updated") and "6 of 6 left" in again.stdout
    hot = seckill("sale", "create", "cli-hot", "--stock", "9", "--buckets", "3", env=env)
    assert hot.returncode == 0, hot.stderr
    assert "9 of 9 left" in hot.stdout and "buckets    3" in hot.stdout
    fixed = seckill("sale", "create", "cli-hot", "--stock", "9", "--buckets", "2", env=env)
    assert fixed.returncode == 1 and len(fixed.stderr.strip().splitlines()) == 1
    assert "buckets_immutable" in fixed.stderr


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["sale", "show", "cli-none"], "sale_not_found"),
        (["sale", "create", "bad id", "--stock", "1"], "invalid_request"),
        (["sale", "create", "x", "--stock", "-1"], "--stock"),
        (["sale", "create", "x"], "--stock"),
        (["sale", "create", "x", "--stock", "1", "--starts-at", "soon"], "starts_at"),
        (["sale", "create", "x", "--stock", "1", "--name", "n" * 201], "$.name"),
        (["sale", "create", "x", "--stock", str(10**12 + 1)], "--stock"),
        (["sale", "create", "x", "--stock", "1", "--buckets", "65"], "--buckets"),
        (["sale", "create", "x", "--stock", "1", "--buckets", "0"], "--buckets"),
    ],
)
def test_cli_sale_bad_input(gateway2: Gateway, args: list[str], fragment: str) -> None:
    env = {"SECKILL_URL": gateway2.url, "SECKILL_ADMIN_TOKEN": ADMIN_TOKEN}
    result = seckill(*args, env=env)
    assert result.returncode in (1, 2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], result.stderr


def test_cli_sale_needs_token_and_gateway(gateway2: Gateway) -> None:
    no_token = seckill(
        "sale", "show", "x", env={"SECKILL_URL": gateway2.url, "SECKILL_ADMIN_TOKEN": ""}
    )
    assert_one_line_error(no_token, "admin token")
    wrong = seckill("sale", "show", "x", "--url", gateway2.url, "--token", "wrong-token-123456789")
    assert_one_line_error(wrong, "unauthenticated")
    port = free_port()
    down = seckill("sale", "show", "x", "--url", f"http://127.0.0.1:{port}", "--token", "t" * 20)
    assert_one_line_error(down, "cannot reach the gateway")


@pytest.mark.parametrize(
    ("args", "env", "fragment"),
    [
        (["--processes", "0"], {}, "--processes"),
        (["--port", "99999"], {}, "--port"),
        (["--port", "abc"], {}, "--port"),
        (["--bogus"], {}, "--bogus"),
        (["--auth", "magic"], {}, "--auth"),
        (["--auth", "jwt"], {"SECKILL_JWT_SECRET": ""}, "SECKILL_JWT_SECRET"),
        (["--redis-url", "http://127.0.0.1:6379"], {}, "--redis-url"),
        (["--order-sink", "ftp://x"], {}, "--order-sink"),
        ([], {"SECKILL_PROCESSES": "many"}, "SECKILL_PROCESSES"),
        ([], {"SECKILL_ADMIN_TOKEN": "short"}, "SECKILL_ADMIN_TOKEN"),
        ([], {"SECKILL_LOG_LEVEL": "LOUD"}, "SECKILL_LOG_LEVEL"),
    ],
)
def test_serve_bad_flags(args: list[str], env: dict[str, str], fragment: str) -> None:
    assert_one_line_error(seckill("serve", *args, env=env), fragment)


def test_serve_unreachable_redis() -> None:
    port = free_port()
    result = seckill(
        "serve", "--port", str(free_port()), "--redis-url", f"redis://127.0.0.1:{port}/0"
    )
    assert_one_line_error(result, "cannot reach Redis")


def test_serve_port_taken(redis_url: str) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = seckill("serve", "--port", str(port), "--redis-url", redis_url)
    assert_one_line_error(result, f"cannot listen on 127.0.0.1:{port}")


def test_serve_data_dir_in_use(tmp_path: Path, redis_binary: str | None) -> None:
    extra = ["--redis-server", redis_binary] if redis_binary else []
    with Gateway("--data-dir", str(tmp_path), *extra) as first:
        first.wait_ready()
        second = seckill("serve", "--port", str(free_port()), "--data-dir", str(tmp_path), *extra)
        assert_one_line_error(second, "in use")
        assert first.stop() == 0


async def _buy(url: str, sale: str, user: str) -> dict:  # type: ignore[type-arg]
    async with aiohttp.ClientSession() as s:
        resp = await s.post(f"{url}/api/v1/sales/{sale}/orders", headers={"X-User-Id": user})
        assert resp.status == 202
        return await resp.json()  # type: ignore[no-any-return]


async def _admin_sale(url: str, sale: str) -> dict:  # type: ignore[type-arg]
    async with aiohttp.ClientSession() as s:
        resp = await s.get(f"{url}/admin/v1/sales/{sale}", headers=ADMIN)
        assert resp.status == 200
        return await resp.json()  # type: ignore[no-any-return]


async def _order(url: str, order_id: str, user: str) -> dict:  # type: ignore[type-arg]
    async with aiohttp.ClientSession() as s:
        resp = await s.get(f"{url}/api/v1/orders/{order_id}", headers={"X-User-Id": user})
        assert resp.status == 200
        return await resp.json()  # type: ignore[no-any-return]


@pytest.mark.fault
@pytest.mark.parametrize("how", ["sigterm", "kill-9"])
async def test_embedded_server_keeps_everything_across_restarts(
    tmp_path: Path, redis_binary: str | None, how: str
) -> None:
    """Embedded server on a data dir: stop (gracefully or by kill -9) and start
    again on the same dir — the sale and every order are still there."""
    extra = ["--data-dir", str(tmp_path), "--processes", "2"]
    if redis_binary:
        extra += ["--redis-server", redis_binary]
    with Gateway(*extra) as gw:
        gw.wait_ready()
        async with aiohttp.ClientSession() as s:
            r = await s.put(f"{gw.url}/admin/v1/sales/keep", json={"stock": 50}, headers=ADMIN)
            assert r.status == 201
        orders = [await _buy(gw.url, "keep", f"u{i}") for i in range(20)]
        server_pids = [p for p in children_of(gw.proc.pid) if "server" in cmdline(p)]
        assert len(server_pids) == 1
        if how == "sigterm":
            assert gw.stop() == 0
        else:
            os.kill(gw.proc.pid, signal.SIGKILL)
            gw.proc.wait(10)
        # the embedded server and the gateway children die with the gateway
        wait_for(lambda: not any(alive(p) for p in server_pids), 15, "the server to stop")

    with Gateway(*extra, port=gw.port) as again:
        again.wait_ready()
        sale = await _admin_sale(again.url, "keep")
        assert sale["stock_left"] == 30
        assert sale["orders"]["queued"] + sale["orders"]["confirmed"] == 20
        for i, order in enumerate(orders):
            stored = await _order(again.url, order["order_id"], f"u{i}")
            assert stored["status"] in ("queued", "confirmed")
        assert again.stop() == 0
