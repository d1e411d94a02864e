"""The cluster-wide token-bucket limits of the buy endpoint (docs/API.md §5).

Stored in the Redis hash ``seckill:limits`` (so a restart keeps them) and
announced on the events channel; every process keeps the current values in
memory and passes them to admit.lua as ARGV, so a per-sale script never reads
a key outside its own slot. With nothing stored, every limit is off.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from redis.asyncio import Redis

from seckill.redis import keys

MAX_RATE = 1e9
#: one request in 1000 s: slower is no rate limit but a closed sale
MIN_RATE = 0.001
MAX_BURST = 1_000_000_000
FIELDS = ("rate", "burst", "per_user_rate", "per_user_burst")


@dataclass(frozen=True, slots=True)
class Limits:
    """Rates in requests/s (None = unlimited); bursts in tokens (≥ 1)."""

    rate: float | None = None
    burst: int = 1
    per_user_rate: float | None = None
    per_user_burst: int = 1

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


UNLIMITED = Limits()


class LimitsError(ValueError):
    """A limits change is malformed; the message is one sentence for the client."""


def parse_changes(body: dict[str, Any]) -> dict[str, Any]:
    """Validate a PUT body: rates > 0 or null, bursts integers ≥ 1."""
    unknown = set(body) - set(FIELDS)
    if unknown:
        raise LimitsError(f"Unknown field(s): {', '.join(sorted(unknown))}.")
    if not body:
        raise LimitsError(f"Give at least one of: {', '.join(FIELDS)}.")
    changes: dict[str, Any] = {}
    for name in ("rate", "per_user_rate"):
        if name in body:
            value = body[name]
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or not MIN_RATE <= value <= MAX_RATE
            ):
                raise LimitsError(
                    f"{name} must be a number from {MIN_RATE:g} to {MAX_RATE:g}, or null."
                )
            changes[name] = None if value is None else float(value)
    for name in ("burst", "per_user_burst"):
        if name in body:
            value = body[name]
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_BURST:
                raise LimitsError(f"{name} must be an integer from 1 to {MAX_BURST}.")
            changes[name] = value
    return changes


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


async def store(redis: Redis, changes: dict[str, Any]) -> Limits:
    """Apply validated *changes* and return the whole stored object."""
    mapping = {k: "" if v is None else repr(v) for k, v in changes.items()}
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(keys.LIMITS, mapping=mapping)  # type: ignore[arg-type]
        pipe.hgetall(keys.LIMITS)
        _, stored = await pipe.execute()
    return from_hash(stored)
