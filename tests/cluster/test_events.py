"""Events in cluster mode: classic pub/sub is broadcast over the cluster bus, so
a change published through one primary reaches a listener on another."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from seckill.redis.client import RedisClients, connect
from seckill.redis.events import Listener, publish_sale_changed
from tests.helpers.cluster import LocalCluster
from tests.helpers.gateway import until

pytestmark = pytest.mark.cluster


async def test_a_sale_change_reaches_a_listener_in_another_process(
    cluster_clients: RedisClients, local_cluster: LocalCluster
) -> None:
    changed: list[str] = []

    async def nothing() -> None:
        return None

    listener = Listener(
        cluster_clients.redis,
        on_sale_changed=changed.append,
        on_limits_changed=nothing,
        on_subscribed=nothing,
    )
    task = asyncio.ensure_future(listener.run())
    other = connect(local_cluster.url)
    try:
        await until(lambda: listener.subscribed, 5, "the listener subscribed")
        for sale_id in (local_cluster.sale_on(i) for i in range(3)):
            await publish_sale_changed(other.redis, sale_id)
            await until(lambda s=sale_id: s in changed, 5, f"the change of {sale_id}")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await other.aclose()
