"""The Redis client of one gateway process."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from seckill.settings import Settings


def make_redis(url: str, settings: Settings) -> Redis:
    """redis-py asyncio (hiredis parser) over a BlockingConnectionPool.

    The blocking pool makes a burst wait briefly for a connection instead of
    failing past ``max_connections``. Automatic retries are off: re-sending an
    EVALSHA of admit.lua after a lost reply could admit the same buy twice, so
    a lost connection is a 503 to the client, who may retry with its
    Idempotency-Key.
    """
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=settings.redis_pool_size,
        timeout=settings.redis_timeout,
        socket_timeout=settings.redis_timeout,
        socket_connect_timeout=settings.redis_timeout,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),
    )
    return Redis(connection_pool=pool)


async def close_redis(redis: Redis) -> None:
    """Close the client and every pooled connection (an explicit pool is not
    closed by ``Redis.aclose`` alone)."""
    await redis.aclose()
    await redis.connection_pool.disconnect()
