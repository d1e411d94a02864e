"""The two Redis clients of one gateway process, built from one URL.

- ``redis``: redis-py asyncio (hiredis parser) over a BlockingConnectionPool,
  for everything that is not per request: admin routes, the pipeline's
  blocking stream reads, pub/sub, locks, heartbeats.
- ``pipe``: the :class:`~seckill.redis.autopipe.AutoPipeline`, for the hot
  path (admit.lua) and the pipeline's per-order calls.

Both connect with the options redis-py's URL parser reads from the URL —
host and port or unix socket, db, user and password, and for ``rediss://``
the TLS options of the query string (``ssl_cert_reqs``, ``ssl_ca_certs``,
``ssl_certfile``, ``ssl_keyfile``, ``ssl_check_hostname``…) with redis-py's
defaults: the pipe takes its endpoint from the pool's parsed options.

The blocking pool makes a burst wait briefly for a connection instead of
failing past ``max_connections``. Automatic retries are off in both: a
re-sent EVALSHA of admit.lua after a lost reply could admit the same buy
twice. A lost reply of admit.lua is settled instead (``Scripts.admit``:
admitted, never, or 503 ``outcome_unknown``).

Redis Cluster (``redis+cluster://host:port[,host:port…]``, ``rediss+cluster://``):
``redis`` is redis-py's ``RedisCluster`` (retries off as above; at most
``pool_size`` commands in flight, the next one waits up to ``timeout`` for
its turn instead of failing; MOVED/ASK followed by redis-py, which re-sends
only what did not run), and ``pipe`` the same auto-pipeline, routing by slot
over one connection per primary. The code is written against
:data:`RedisClient` (redis-py's ``Redis``): ``RedisCluster`` has the same
command methods, and what differs (multi-key commands across slots,
transactions) is not used across slots (docs/architecture.md).
"""

from __future__ import annotations

import asyncio
import contextvars
from dataclasses import dataclass
from typing import Any, TypeAlias, cast

from redis._parsers import AsyncCommandsParser
from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, ClusterPubSub
from redis.asyncio.connection import SSLConnection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, SlotNotCoveredError
from redis.exceptions import TimeoutError as RedisTimeoutError

from seckill.redis.autopipe import AutoPipeline, endpoint_of
from seckill.redis.cluster_url import parse_cluster_url

#: The pooled client as the code sees it: redis-py's ``Redis``, or in cluster
#: mode a ``RedisCluster`` (same command methods; the type checker is told Redis).
RedisClient: TypeAlias = Redis

#: defaults of ``--redis-pool-size`` and ``--redis-timeout``
POOL_SIZE, TIMEOUT = 64, 2.0


@dataclass(frozen=True, slots=True)
class RedisClients:
    redis: RedisClient
    pipe: AutoPipeline

    @property
    def cluster(self) -> bool:
        """True in cluster mode (``redis+cluster://``)."""
        return self.pipe.cluster

    async def ping(self) -> None:
        """Both clients answer, or the error of the first that does not. In a
        cluster: some primary answers each (one primary down takes down its
        own sales only, not the gateway)."""
        if not self.cluster:
            await asyncio.gather(self.redis.ping(), self.pipe.execute("PING"))
            return
        await asyncio.gather(self._ping_any_primary(), self.pipe.execute("PING"))

    async def _ping_any_primary(self) -> None:
        cluster = cast(RedisCluster, self.redis)
        try:
            await cluster.initialize()
        except RedisClusterException as exc:
            raise _unreachable(exc) from exc
        failure: Exception = RedisConnectionError("no Redis Cluster primary known")
        for node in cluster.get_primaries():
            try:
                await cluster.execute_command("PING", target_nodes=node)
                return
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                failure = exc
        raise failure

    async def aclose(self) -> None:
        """Close both, and every pooled connection (an explicit pool is not
        closed by ``Redis.aclose`` alone; nor a cluster's, at times)."""
        await self.pipe.aclose()
        await self.redis.aclose()
        if not self.cluster:
            await self.redis.connection_pool.disconnect()
            return
        # RedisCluster.aclose does nothing while it means to read the slot map
        # again (after any connection error): close every node's connections
        manager = cast(RedisCluster, self.redis).nodes_manager
        await manager.aclose()
        await manager.aclose("startup_nodes")


def connect(url: str, *, pool_size: int = POOL_SIZE, timeout: float = TIMEOUT) -> RedisClients:
    """The pooled client and the auto-pipeline for *url* (nothing connects yet)."""
    cluster = parse_cluster_url(url)
    if cluster is not None:
        options: dict[str, Any] = dict(parse_url(cluster.node_url))
        options.pop("host", None)
        options.pop("port", None)
        options.pop("db", None)
        tls = options.pop("connection_class", None) is SSLConnection
        settings: dict[str, Any] = {
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            **options,  # the URL's options win, as with one server
            "ssl": tls,
            "decode_responses": True,
            "retry": Retry(NoBackoff(), 0),
            # a dead primary's slots stay down (no replica): the rest still serve
            "require_full_coverage": False,
        }
        client = BoundedRedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in cluster.seeds],
            pool_size=pool_size,
            wait=timeout,
            **settings,
        )
        pipe = AutoPipeline(
            endpoint_of(ConnectionPool.from_url(cluster.node_url)), timeout, seeds=cluster.seeds
        )
        return RedisClients(cast(Redis, client), pipe)
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=pool_size,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
    )
    return RedisClients(Redis(connection_pool=pool), AutoPipeline(endpoint_of(pool), timeout))


#: set while a task holds a turn of a BoundedRedisCluster
_HOLDS_TURN: contextvars.ContextVar[bool] = contextvars.ContextVar("holds_turn", default=False)
#: connections per node beyond pool_size: pub/sub holds one of its own
SPARE_CONNECTIONS = 8


class _CommandsFromAnyPrimary(AsyncCommandsParser):
    """redis-py reads the command table (COMMAND) from the slot map's first
    primary each time it reads the slot map, and fails as a whole when that
    primary is dead: with no replica, every command to the live primaries
    would fail too. This one asks the primaries in turn and makes the first
    that answers the client's default node (keyless commands go there)."""

    def __init__(self, cluster: RedisCluster) -> None:
        super().__init__()
        self._cluster = cluster

    async def initialize(self, node: ClusterNode | None = None) -> None:
        primaries = self._cluster.get_primaries()
        failure: Exception = RedisConnectionError("no Redis Cluster primary answers")
        for candidate in [node, *(p for p in primaries if p is not node)]:
            if candidate is None:
                continue
            try:
                await super().initialize(candidate)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                failure = exc
                continue
            if candidate is not node:
                self._cluster.set_default_node(candidate)
            return
        raise failure


class BoundedRedisCluster(RedisCluster):
    """redis-py's ``RedisCluster``, with at most *pool_size* commands (and
    pipelines) in flight: one more waits up to *wait* seconds for its turn, as
    with the ``BlockingConnectionPool`` of one server, instead of failing with
    ``MaxConnectionsError``. Each holds at most one connection per node, so no
    node ever needs more than *pool_size* connections."""

    def __init__(self, *args: Any, pool_size: int, wait: float, **kwargs: Any) -> None:
        kwargs["max_connections"] = pool_size + SPARE_CONNECTIONS
        super().__init__(*args, **kwargs)
        self.commands_parser = _CommandsFromAnyPrimary(self)
        self._turns = asyncio.Semaphore(pool_size)
        self._wait = wait
        self._next_listener = -1

    async def take_turn(self) -> bool:
        """Wait for a turn (False: this task holds one already, e.g. a pipeline
        sending a redirected command again)."""
        if _HOLDS_TURN.get():
            return False
        if self._turns.locked():
            try:
                await asyncio.wait_for(self._turns.acquire(), self._wait)
            except TimeoutError:
                raise RedisConnectionError("No connection available.") from None
        else:
            await self._turns.acquire()
        _HOLDS_TURN.set(True)
        return True

    def end_turn(self, taken: bool) -> None:
        if taken:
            _HOLDS_TURN.set(False)
            self._turns.release()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        taken = await self.take_turn()
        try:
            if self._initialize:
                # redis-py picks a command's routing before it reads the slot
                # map: on a client that has none (new, or after a lost
                # connection) a keyed command would go to a random primary
                # (then MOVED), and to a dead one a third of the time
                await self.initialize()
            return await super().execute_command(*args, **kwargs)
        except RedisClusterException as exc:
            raise _unreachable(exc) from exc
        finally:
            self.end_turn(taken)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> Any:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)
        return _BoundedPipeline(self, transaction)  # type: ignore[abstract]

    def pubsub(
        self, node: Any | None = None, host: str | None = None, port: int | None = None, **kw: Any
    ) -> Any:
        """Classic pub/sub reaches every node over the cluster bus, so a
        subscriber may listen on any primary: each new one takes the next
        primary in turn, and a listener that lost its node (and subscribes
        again) finds a live one."""
        if node is None and host is None:
            primaries = self.get_primaries()
            if primaries:
                self._next_listener += 1
                node = primaries[self._next_listener % len(primaries)]
        return _ClusterPubSub(self, node=node, host=host, port=port, **kw)

    def publish(self, channel: Any, message: Any, **kwargs: Any) -> Any:
        return self.publish_any(channel, message)

    async def publish_any(self, channel: str, message: Any) -> int:
        """PUBLISH (classic) through the first primary that answers, the one
        serving the channel's slot first (redis-py would only ever try that
        one): an event still goes out while one primary is down. A publish
        whose answer was lost may go out twice; events are idempotent."""
        try:
            await self.initialize()
            owner = self.get_node_from_key(channel)
        except RedisClusterException as exc:  # no map yet, or the slot unserved
            if not self.get_primaries():
                raise _unreachable(exc) from exc
            owner = None
        nodes = [owner, *(n for n in self.get_primaries() if n is not owner)]
        failure: Exception = RedisConnectionError("no Redis Cluster primary known")
        for node in nodes:
            if node is None:
                continue
            try:
                return int(
                    await self.execute_command("PUBLISH", channel, message, target_nodes=node)
                )
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                failure = exc
        raise failure


def _unreachable(exc: RedisClusterException) -> Exception:
    """No node answered, or a slot has no primary: a ConnectionError, as the
    code expects of an unreachable Redis (503), not redis-py's
    RedisClusterException (which is no RedisError). Anything else (a
    command across slots: a bug) stays as it is."""
    if isinstance(exc, SlotNotCoveredError) or "cannot be connected" in str(exc):
        return RedisConnectionError(str(exc))
    return exc


class _BoundedPipeline(ClusterPipeline):
    """A cluster pipeline that waits for its turn like a single command."""

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> Any:
        client = self.cluster_client
        assert isinstance(client, BoundedRedisCluster)
        taken = await client.take_turn()
        try:
            return await super().execute(raise_on_error, allow_redirections)
        except RedisClusterException as exc:
            raise _unreachable(exc) from exc
        finally:
            client.end_turn(taken)


class _ClusterPubSub(ClusterPubSub):
    """redis-py's cluster pub/sub, with the slot map read before a node is
    picked for the first SUBSCRIBE (redis-py reads it from a cache that may
    still be empty), and an unreachable cluster a ConnectionError."""

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        try:
            if self.connection is None and self.connection_pool is None:
                await self.cluster.initialize()
            return await super().execute_command(*args, **kwargs)
        except RedisClusterException as exc:
            raise _unreachable(exc) from exc
