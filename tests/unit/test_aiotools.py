"""cancel_and_wait: a task whose cancellation was swallowed still stops."""

from __future__ import annotations

import asyncio

from seckill.aiotools import cancel_and_wait


async def test_a_swallowed_cancellation_is_repeated() -> None:
    """Like the order reader at shutdown: the first cancel is lost inside a
    library, the loop goes on to wait on a queue nobody will ever drain."""
    swallowed = asyncio.Event()
    full: asyncio.Queue[int] = asyncio.Queue(1)
    full.put_nowait(0)

    async def reader() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            swallowed.set()  # lost: the task carries on
        await full.put(1)  # blocks: the queue stays full

    task = asyncio.create_task(reader())
    await asyncio.sleep(0)
    assert await cancel_and_wait([task], deadline=5.0)
    assert swallowed.is_set() and task.cancelled()


async def test_a_task_that_never_stops_is_given_up_after_the_deadline() -> None:
    stop = asyncio.Event()

    async def stubborn() -> None:
        while not stop.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                continue

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert not await cancel_and_wait([task], deadline=0.3)
    assert 0.3 <= loop.time() - started < 2.0
    assert not task.done()
    stop.set()
    task.cancel()
    await asyncio.wait([task], timeout=5)
    assert task.done()


async def test_tasks_already_done_need_nothing() -> None:
    task = asyncio.create_task(asyncio.sleep(0))
    await task
    assert await cancel_and_wait([task], deadline=0.1)
