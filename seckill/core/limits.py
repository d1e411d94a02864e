"""The cluster-wide token-bucket limits of the buy endpoint (docs/API.md §5).

Stored in the Redis hash ``seckill:limits`` (so a restart keeps them) and
announced on the events channel; every process keeps the current values in
memory and passes them to admit.lua as ARGV, so a per-sale script never reads
a key outside its own slot. With nothing stored, every limit is off. The
fields and their bounds are ``seckill.schemas.Limits`` / ``LimitsUpdate``.
"""

from __future__ import annotations

import math

from redis.asyncio import Redis

from seckill.redis import keys
from seckill.schemas import MIN_RATE, Limits, LimitsUpdate, to_builtins


def from_hash(stored: dict[str, str]) -> Limits:
    """Limits from the Redis hash; a field that is absent or unreadable keeps its default."""

    def rate(name: str) -> float | None:
        try:
            value = float(stored.get(name) or "nan")
        except ValueError:
            return None
        return value if math.isfinite(value) and value >= MIN_RATE else None

    def burst(name: str) -> int:
        try:
            return max(1, int(stored.get(name) or 1))
        except ValueError:
            return 1

    return Limits(rate("rate"), burst("burst"), rate("per_user_rate"), burst("per_user_burst"))


async def load(redis: Redis) -> Limits:
    return from_hash(await redis.hgetall(keys.LIMITS))  # type: ignore[arg-type]


async def store(redis: Redis, changes: LimitsUpdate) -> Limits:
    """Apply validated *changes* (the fields given) and return the whole stored object."""
    given = to_builtins(changes)  # UNSET fields are left out
    mapping = {k: "" if v is None else repr(v) for k, v in given.items()}
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(keys.LIMITS, mapping=mapping)  # type: ignore[arg-type]
        pipe.hgetall(keys.LIMITS)
        _, stored = await pipe.execute()
    return from_hash(stored)
