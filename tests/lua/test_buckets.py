"""The token buckets in admit.lua, with deterministic time (docs/API.md §5)."""

from __future__ import annotations

import pytest

from seckill.core.limits import Limits
from seckill.redis.scripts import Admit, Scripts

T0 = 1_700_000_000_000


@pytest.fixture
async def sale(scripts: Scripts) -> Scripts:
    await scripts.sale_put("s", {"stock": 10**9, "per_user_limit": 10**6}, now_ms=T0)
    return scripts


async def outcomes(scripts: Scripts, limits: Limits, at_ms: int, users: list[str]) -> list[Admit]:
    return [(await scripts.admit("s", u, 1, limits=limits, now_ms=at_ms)).outcome for u in users]


OK, RL = Admit.OK, Admit.RATE_LIMITED


async def test_burst_then_refill(sale: Scripts) -> None:
    limits = Limits(rate=10, burst=5)
    users = [f"u{i}" for i in range(7)]
    assert await outcomes(sale, limits, T0, users) == [OK] * 5 + [RL] * 2
    # 10/s: one token per 100 ms
    assert await outcomes(sale, limits, T0 + 99, ["a"]) == [RL]
    assert await outcomes(sale, limits, T0 + 100, ["a", "b"]) == [OK, RL]
    # a long pause refills to the burst, not beyond
    assert await outcomes(sale, limits, T0 + 60_000, users) == [OK] * 5 + [RL] * 2


async def test_fractional_rate_and_retry_after(sale: Scripts) -> None:
    limits = Limits(rate=0.5, burst=1)
    assert await outcomes(sale, limits, T0, ["a"]) == [OK]
    r = await sale.admit("s", "b", 1, limits=limits, now_ms=T0 + 500)
    assert (r.outcome, r.retry_after_ms) == (RL, 1500)
    assert await outcomes(sale, limits, T0 + 1999, ["b"]) == [RL]
    assert await outcomes(sale, limits, T0 + 2000, ["b"]) == [OK]


async def test_rate_change_midway(sale: Scripts) -> None:
    slow, fast = Limits(rate=1, burst=1), Limits(rate=100, burst=1)
    assert await outcomes(sale, slow, T0, ["a", "b"]) == [OK, RL]
    assert await outcomes(sale, slow, T0 + 500, ["b"]) == [RL]
    # from the same state, the faster rate refills 100x quicker
    assert await outcomes(sale, fast, T0 + 510, ["b", "c"]) == [OK, RL]
    # and a smaller burst caps what was saved up
    assert await outcomes(sale, Limits(rate=100, burst=3), T0 + 10_000, list("defg")) == (
        [OK] * 3 + [RL]
    )


async def test_per_user_buckets_are_independent(sale: Scripts) -> None:
    limits = Limits(per_user_rate=1, per_user_burst=2)
    assert await outcomes(sale, limits, T0, ["a", "a", "a"]) == [OK, OK, RL]
    assert await outcomes(sale, limits, T0, ["b", "b"]) == [OK, OK]
    assert await outcomes(sale, limits, T0 + 1000, ["a", "a"]) == [OK, RL]


async def test_refusal_by_one_bucket_does_not_charge_the_other(sale: Scripts) -> None:
    limits = Limits(rate=1, burst=2, per_user_rate=1, per_user_burst=1)
    assert await outcomes(sale, limits, T0, ["a", "a", "a", "b"]) == [OK, RL, RL, OK]
