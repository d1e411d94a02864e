"""The local shield: a per-process token bucket in front of the cluster-wide one.

Under a blast far above the configured rate, most of the excess is refused
here, without a Redis call. Sizing: each process takes the sale's rate and
burst, split over the live gateway processes (``seckill.redis.peers``), times
``HEADROOM``. With SO_REUSEPORT (or a load balancer) spreading connections
evenly, a process sees about 1/n of the traffic and is allowed twice that, so
the shield only refuses what the exact, cluster-wide bucket in admit.lua would
refuse anyway; it can only make the limit stricter when one process gets more
than HEADROOM times its fair share of the traffic.
"""

from __future__ import annotations

import math

from aiolimiter import AsyncLimiter

from seckill.schemas import Limits

HEADROOM = 2.0
#: seconds: a Retry-After is never longer than this
MAX_RETRY_AFTER = 3600
#: sale ids are client input: past this many limiters the shield starts over.
MAX_SALES = 10_000


class LocalShield:
    def __init__(self) -> None:
        self._limiters: dict[str, AsyncLimiter] = {}
        self.rate: float | None = None
        self.burst = 1.0
        #: whole seconds (≥ 1) until this process's bucket has a token again
        self.retry_after = 1

    def configure(self, limits: Limits, processes: int) -> None:
        """Resize for new limits or a new count of live processes."""
        share = HEADROOM / max(1, processes)
        rate = None if limits.rate is None else limits.rate * share
        burst = max(1.0, math.ceil(limits.burst * share))
        if (rate, burst) != (self.rate, self.burst):
            self.rate, self.burst = rate, burst
            self._limiters.clear()
            self.retry_after = (
                1 if rate is None else max(1, min(MAX_RETRY_AFTER, math.ceil(1 / rate)))
            )

    def _limiter(self, sale_id: str) -> AsyncLimiter:
        assert self.rate is not None
        limiter = self._limiters.get(sale_id)
        if limiter is None:
            if len(self._limiters) >= MAX_SALES:
                self._limiters.clear()
            limiter = self._limiters[sale_id] = AsyncLimiter(self.burst, self.burst / self.rate)
        return limiter

    def refuses(self, sale_id: str) -> bool:
        """True when this process's bucket for *sale_id* has no token (no waiting)."""
        return self.rate is not None and not self._limiter(sale_id).has_capacity()

    async def acquire(self, sale_id: str) -> None:
        """Take a token; call right after ``refuses()`` said no, so it never waits."""
        if self.rate is not None:
            await self._limiter(sale_id).acquire()
