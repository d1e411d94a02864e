"""The gateway's clients in cluster mode: RedisCluster with retries off (a
timed-out command is not sent again) and a bound on commands in flight that
waits instead of failing; the auto-pipeline routes by slot, keyless commands
to any primary, and fails what may have run without re-sending it."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import RedisCluster
from redis.exceptions import ConnectionError, TimeoutError

from seckill.process.procs import free_port
from seckill.redis.autopipe import NotSent, command_key, slot_of
from seckill.redis.client import BoundedRedisCluster, RedisClients, connect
from seckill.redis.scripts import Scripts
from tests.helpers.cluster import LocalCluster
from tests.helpers.cluster import slot_of as redis_py_slot_of
from tests.helpers.gateway import until

pytestmark = pytest.mark.cluster


def test_routing_keys_and_slots() -> None:
    assert command_key(("EVALSHA", "abc", 2, "k1", "k2", "arg")) == "k1"
    assert command_key(("EVAL", "return 1", 0)) is None
    assert command_key(("HGET", "h", "f")) == "h"
    assert command_key(("TIME",)) is None and command_key(("PING",)) is None
    assert command_key(("SCRIPT", "LOAD", "return 1")) is None
    for key in ("seckill:{s1}:sale", "{}x", "a{b}c{d}", "plain", "{x", "é{ü}"):
        assert slot_of(key) == redis_py_slot_of(key), key


async def test_the_pooled_client_is_a_cluster_client_without_retries(
    cluster_clients: RedisClients,
) -> None:
    assert cluster_clients.cluster
    assert isinstance(cluster_clients.redis, RedisCluster)
    assert cluster_clients.redis.retry.get_retries() == 0


async def test_a_timed_out_command_is_not_sent_again(local_cluster: LocalCluster) -> None:
    """Writes paused on the key's primary: the INCR times out after one try
    (redis-py's default would try again on a new connection, with backoff)."""
    key = f"n{{{local_cluster.sale_on(1)}}}"
    clients = connect(local_cluster.url, timeout=0.3)
    try:
        await clients.redis.ping()
        with local_cluster.nodes[1].client() as node:
            opened = int(node.info("stats")["total_connections_received"])
            node.execute_command("CLIENT", "PAUSE", 1000, "WRITE")
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await clients.redis.incr(key)
            assert time.monotonic() - started < 0.6
            with pytest.raises((TimeoutError, ConnectionError)) as lost:
                await clients.pipe.execute("INCR", key)
            assert not isinstance(lost.value, NotSent)  # written: it may have run
            # one pooled connection and the pipeline's, none for a second try
            assert int(node.info("stats")["total_connections_received"]) - opened <= 2
            node.execute_command("CLIENT", "UNPAUSE")
    finally:
        await clients.aclose()


async def test_commands_past_the_pool_size_wait_their_turn(local_cluster: LocalCluster) -> None:
    clients = connect(local_cluster.url, pool_size=2, timeout=3.0)
    try:
        await clients.redis.ping()
        started = time.monotonic()
        # 8 blocking pops of 0.2 s, 2 at a time: all answered, none refused
        results = await asyncio.gather(*(clients.redis.blpop([f"q{i}"], 0.2) for i in range(8)))
        assert results == [None] * 8
        assert time.monotonic() - started >= 0.75
    finally:
        await clients.aclose()
    short = connect(local_cluster.url, pool_size=1, timeout=0.3)
    bounded = short.redis
    assert isinstance(bounded, BoundedRedisCluster)
    release = asyncio.Event()

    async def hold() -> None:  # the one turn, taken by another task
        taken = await bounded.take_turn()
        await release.wait()
        bounded.end_turn(taken)

    holder = asyncio.ensure_future(hold())
    try:
        await until(lambda: bounded._turns.locked(), 2, "the turn taken")
        started = time.monotonic()
        with pytest.raises(ConnectionError, match="No connection available"):
            await bounded.get("other")
        assert time.monotonic() - started >= 0.25  # it waited for a turn first
        release.set()
        await holder
        assert await bounded.get("other") is None
    finally:
        release.set()
        await holder
        await short.aclose()


async def test_an_unreachable_cluster_is_a_connection_error() -> None:
    clients = connect(f"redis+cluster://127.0.0.1:{free_port()}", timeout=0.5)
    try:
        with pytest.raises(ConnectionError):
            await clients.redis.hgetall("x")
        with pytest.raises(NotSent):
            await clients.pipe.execute("HGETALL", "x")
    finally:
        await clients.aclose()


async def test_keyless_commands_go_to_any_primary(cluster_clients: RedisClients) -> None:
    assert await cluster_clients.pipe.execute("PING") == "PONG"
    seconds, _ = await cluster_clients.pipe.execute("TIME")
    assert abs(int(seconds) - time.time()) < 5
    assert abs(cluster_clients.pipe.redis_now_ms() - time.time() * 1000) < 5000


async def test_ask_is_followed_on_the_same_connection(
    local_cluster: LocalCluster, cluster_clients: RedisClients
) -> None:
    """A slot half migrated: a key not on the source any more is asked of the
    target (ASKING, then the command, on one connection); the map is left as it is."""
    pipe = cluster_clients.pipe
    sale_id = local_cluster.sale_on(0)
    key, slot = f"k{{{sale_id}}}", redis_py_slot_of(sale_id)
    source, target = local_cluster.nodes[0], local_cluster.nodes[2]
    assert await pipe.execute("SET", key, "before") == "OK"
    source_id, target_id = local_cluster.node_id(0), local_cluster.node_id(2)
    with source.client() as s, target.client() as t:
        t.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        s.execute_command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", key)
        try:
            assert await pipe.execute("GET", key) == "before"  # asked of the target
            assert await pipe.execute("SET", f"new{{{sale_id}}}", "x") == "OK"
            assert pipe.redirected["ASK"] == 2
            assert pipe.address_of(key) == source.address  # not moved yet
            with target.client() as t2:
                t2.execute_command("ASKING")
                assert t2.get(f"new{{{sale_id}}}") == "x"
        finally:  # hand the slot over, then the layout back
            for node in local_cluster.nodes:
                with node.client() as c:
                    c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
            local_cluster.wait_ok()
    local_cluster.ensure_running()
    assert local_cluster.node_of(key) is source


async def test_a_slot_nobody_serves_fails_not_sent_within_the_timeout(
    local_cluster: LocalCluster,
) -> None:
    """CLUSTERDOWN (the slot unassigned everywhere): the map read again, then
    NotSent within the timeout; the command never ran. The other slots still
    serve."""
    sale_id = local_cluster.sale_on(1)
    key, slot = f"n{{{sale_id}}}", redis_py_slot_of(sale_id)
    clients = connect(local_cluster.url, timeout=0.5)
    try:
        assert await clients.pipe.execute("INCR", key) == 1
        for node in local_cluster.nodes:
            with node.client() as c:
                c.execute_command("CLUSTER", "DELSLOTS", slot)
        started = time.monotonic()
        # CLUSTERDOWN, the map read again: nobody serves the slot
        with pytest.raises(NotSent, match=r"CLUSTERDOWN|no Redis Cluster primary serves"):
            await clients.pipe.execute("INCR", key)
        assert time.monotonic() - started < 1.5
        assert clients.pipe.redirected["CLUSTERDOWN"] >= 1
        other = f"n{{{local_cluster.sale_on(0)}}}"
        assert await clients.pipe.execute("INCR", other) == 1
    finally:
        with local_cluster.nodes[1].client() as c:
            c.execute_command("CLUSTER", "ADDSLOTS", slot)
        await clients.aclose()
    local_cluster.wait_ok()
    with local_cluster.nodes[1].client() as c:
        assert c.get(key) == "1"  # the refused INCR never ran
    local_cluster.flush_all()


async def test_noscript_on_the_primary_an_ask_leads_to(
    local_cluster: LocalCluster, cluster_clients: RedisClients
) -> None:
    """A script sent on by ASK to a primary without it: loaded there too (every
    primary gets the script when one lacks it) and sent again."""
    scripts = Scripts(cluster_clients)
    script = cluster_clients.redis.register_script("return redis.call('GET', KEYS[1])")
    sale_id = local_cluster.sale_on(0)
    key, slot = f"k{{{sale_id}}}", redis_py_slot_of(sale_id)
    source, target = local_cluster.nodes[0], local_cluster.nodes[2]
    assert await cluster_clients.pipe.execute("SET", key, "here") == "OK"
    assert await scripts._run(script, [key], []) == "here"
    with source.client() as s, target.client() as t:
        t.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", local_cluster.node_id(0))
        s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", local_cluster.node_id(2))
        s.execute_command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", key)
        t.script_flush()
        try:
            assert await scripts._run(script, [key], []) == "here"
            assert cluster_clients.pipe.redirected["ASK"] >= 2
        finally:
            for node in local_cluster.nodes:
                with node.client() as c:
                    c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", local_cluster.node_id(2))
            local_cluster.wait_ok()
    local_cluster.ensure_running()


async def test_fresh_clients_serve_the_live_primaries_while_the_first_is_dead(
    local_cluster: LocalCluster, cluster_clients: RedisClients
) -> None:
    """The first seed and the slot map's first primary dead (no replica):
    new clients, and a client after a lost connection, still reach the keys
    of the live primaries every time — redis-py alone reads its command
    table from that primary, and routes the first command of a client with
    no slot map to a random primary."""
    live = next(f"k{i}" for i in range(10_000) if local_cluster.node_of(f"k{i}").index == 2)
    dead = next(f"k{i}" for i in range(10_000) if local_cluster.node_of(f"k{i}").index == 0)
    await cluster_clients.redis.set(live, "here")
    local_cluster.kill(0)
    try:
        for _ in range(12):
            clients = connect(local_cluster.url, timeout=2.0)
            try:
                assert await clients.redis.get(live) == "here"
                with pytest.raises((ConnectionError, TimeoutError)):
                    await clients.redis.get(dead)
                assert await clients.redis.get(live) == "here"  # after the lost connection
            finally:
                await clients.aclose()
    finally:
        local_cluster.restart(0)
