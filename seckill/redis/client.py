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
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from seckill.redis.autopipe import AutoPipeline, endpoint_of

#: defaults of ``--redis-pool-size`` and ``--redis-timeout``
POOL_SIZE, TIMEOUT = 64, 2.0


@dataclass(frozen=True, slots=True)
class RedisClients:
    redis: Redis
    pipe: AutoPipeline

    async def ping(self) -> None:
        """Both clients answer, or the error of the first that does not."""
        await asyncio.gather(self.redis.ping(), self.pipe.execute("PING"))

    async def aclose(self) -> None:
        """Close both, and every pooled connection (an explicit pool is not
        closed by ``Redis.aclose`` alone)."""
        await self.pipe.aclose()
        await self.redis.aclose()
        await self.redis.connection_pool.disconnect()


def connect(url: str, *, pool_size: int = POOL_SIZE, timeout: float = TIMEOUT) -> RedisClients:
    """The pooled client and the auto-pipeline for *url* (nothing connects yet)."""
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
