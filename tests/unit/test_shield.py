"""The local shield: a per-process token bucket sized from the limits."""

from __future__ import annotations

import asyncio

import pytest

from seckill.core.limits import Limits
from seckill.core.shield import LocalShield


async def take(shield: LocalShield, sale_id: str) -> bool:
    """What the buy handler does: refuse without waiting, else take a token.

    The token must be there when ``refuses()`` said so: ``acquire()`` is
    stepped once by hand and fails the test at once if it would wait (with
    the loop's clock frozen, a wait would never end, and no timeout on that
    clock would fire either)."""
    if shield.refuses(sale_id):
        return False
    step = shield.acquire(sale_id)
    try:
        step.send(None)
    except StopIteration:
        return True
    step.close()
    pytest.fail(f"the shield of {sale_id!r} said it had a token, then waited for one")


async def test_local_shield_sizing(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(asyncio.get_running_loop(), "time", lambda: clock[0])
    shield = LocalShield()
    assert await take(shield, "s")  # unlimited
    shield.configure(Limits(rate=10, burst=5), processes=4)  # 2x the fair share: 5/s, burst 3
    assert [await take(shield, "s") for _ in range(4)] == [True, True, True, False]
    assert await take(shield, "other")  # one bucket per sale
    assert shield.retry_after == 1
    clock[0] += 0.2  # 5/s: one token per 200 ms
    assert [await take(shield, "s") for _ in range(2)] == [True, False]
    shield.configure(Limits(rate=10, burst=5), processes=1)  # resized: fresh buckets
    assert [await take(shield, "s") for _ in range(11)] == [True] * 10 + [False]
    shield.configure(Limits(rate=0.1, burst=1), processes=1)
    assert shield.retry_after == 5
