"""How many gateway processes are alive, cluster-wide (sizes the local shield).

Each process that admits buys (``serve --role all`` or ``gateway``; a
``worker`` never beats: it takes no buys, so it must not shrink the shares)
adds itself with a timestamp to the sorted set
``seckill:gateways`` every ``INTERVAL`` seconds and counts the members seen
within ``TTL``; a process that died drops out after ``TTL``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from seckill.aiotools import reraise_if_cancelling
from seckill.redis import keys

log = logging.getLogger("seckill.peers")

INTERVAL = 1.0
TTL = 5.0


def process_id() -> str:
    """A name for this process, unique across hosts and restarts."""
    return f"{os.uname().nodename}:{os.getpid()}:{secrets.token_hex(3)}"


async def beat(redis: Redis, me: str) -> int:
    now = time.time()
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zadd(keys.GATEWAYS, {me: now})
        pipe.zremrangebyscore(keys.GATEWAYS, "-inf", now - TTL)
        pipe.zcard(keys.GATEWAYS)
        *_, count = await pipe.execute()
    return int(count)


async def heartbeat(redis: Redis, me: str, on_count: Callable[[int], None]) -> None:
    """Run until cancelled; call *on_count* with the live count after each beat."""
    try:
        while True:
            try:
                on_count(await beat(redis, me))
            except (RedisError, OSError) as exc:
                reraise_if_cancelling()
                log.debug("heartbeat failed: %s", exc)
            await asyncio.sleep(INTERVAL)
    finally:
        with contextlib.suppress(RedisError, OSError):
            await redis.zrem(keys.GATEWAYS, me)
