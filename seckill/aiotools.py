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
