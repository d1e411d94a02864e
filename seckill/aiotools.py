"""Small asyncio helpers for the background loops."""

from __future__ import annotations

import asyncio


def reraise_if_cancelling() -> None:
    """Raise CancelledError if the current task was asked to stop.

    For the ``except RedisError`` arm of a retry loop: redis-py may turn a
    cancellation that lands mid-read into a connection error, and a loop that
    retries on those would then never stop.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def cancel_and_wait(tasks: list[asyncio.Task[None]], deadline: float) -> bool:
    """Cancel *tasks* and wait until they are done, at most *deadline* seconds.

    A library may swallow a cancellation: redis-py's reads run under
    ``asyncio.timeout``, and on Python 3.11 a cancel that lands as that
    timeout fires can be lost; the loop then carries on and may wait forever
    (seen: the order reader blocked on a full queue at shutdown). So the
    cancel is repeated until the task ends. True when all ended in time.
    """
    pending = {task for task in tasks if not task.done()}
    loop = asyncio.get_running_loop()
    until = loop.time() + deadline
    while pending:
        for task in pending:
            task.cancel()
        left = until - loop.time()
        if left <= 0:
            return False
        _, pending = await asyncio.wait(pending, timeout=min(0.1, left))
    return True
