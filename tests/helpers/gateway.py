"""Real gateways for the tests (through the one launcher), crowds and waits."""

from __future__ import annotations

import asyncio
import time
from typing import Any, Self

from seckill.tools.launcher import START_TIMEOUT, GatewayProcess, LaunchError
from tests.helpers.api import ADMIN_TOKEN

#: what ``seckill serve`` says when its port was taken (seckill/process/server.py)
PORT_TAKEN = "Address already in use"
#: starts tried on a new free port when the one picked was taken meanwhile
PORT_TRIES = 3


class Gateway(GatewayProcess):
    """``seckill serve`` through the launcher, with the tests' admin token; use
    it in a ``with`` block (SIGKILLed and cleaned up on the way out).

    Without ``port=``, the port is a free one the kernel picked, which another
    process may bind before the gateway does: :meth:`wait_ready` then starts it
    again on another (read ``url``/``port`` after it)."""

    def __init__(self, *flags: str, **kwargs: Any) -> None:
        self._flags, self._kwargs = flags, kwargs
        super().__init__(*flags, admin_token=ADMIN_TOKEN, **kwargs)

    def wait_ready(self, timeout: float = START_TIMEOUT) -> Self:
        for attempt in range(PORT_TRIES):
            try:
                return super().wait_ready(timeout)
            except LaunchError:
                taken = PORT_TAKEN in self.output() and not self.running()
                if self._kwargs.get("port") is not None or not taken:
                    raise
                if attempt == PORT_TRIES - 1:
                    raise
                self.kill()
                super().__init__(*self._flags, admin_token=ADMIN_TOKEN, **self._kwargs)
        raise AssertionError("unreachable")


def wait_for(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


async def blast(
    url: str,
    sale: str,
    seconds: float,
    concurrency: int = 64,
    user: str | None = None,
    prefix: str = "b",
) -> list[tuple[float, int]]:
    """Buy as fast as *concurrency* connections allow for *seconds*.

    Every request has a fresh user id (``<prefix><n>``) unless *user* is given.
    Returns (seconds since start, status) per answer. Bounded in time and to
    127.0.0.1 by the caller's URL.
    """
    import aiohttp  # local: only the load tests need it

    results: list[tuple[float, int]] = []
    counter = iter(range(10**9))
    start = time.monotonic()
    deadline = start + seconds
    conn = aiohttp.TCPConnector(limit=concurrency)
    # one buy that hangs fails the test with its own message, not the suite's timeout
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:

        async def worker() -> None:
            while (now := time.monotonic()) < deadline:
                uid = user or f"{prefix}{next(counter)}"
                async with session.post(
                    f"{url}/api/v1/sales/{sale}/orders", headers={"X-User-Id": uid}
                ) as resp:
                    await resp.read()
                    results.append((now - start, resp.status))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


async def until(condition, within: float = 10.0, what: str = "the condition") -> None:  # type: ignore[no-untyped-def]
    """Poll *condition* (sync or async) until it holds; fail after *within* seconds."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.01)
