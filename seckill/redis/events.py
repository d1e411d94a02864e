"""Cluster-wide events over Redis pub/sub.

Every gateway process listens on one channel for:

- ``{"event": "sale_changed", "sale_id": S}`` — a restock, update or cancel:
  drop the cached view and the sold-out flag of S;
- ``{"event": "limits"}`` — the stored limits changed: re-read them.

When the listener's connection drops, anything may have been missed, so on
every (re)subscribe it calls ``on_subscribed`` (the process forgets all it
cached and re-reads the limits).

In a Redis Cluster this is still classic PUBLISH/SUBSCRIBE: a message
published on any node is broadcast over the cluster bus to every node, so a
subscription on any one node sees every event (tests/cluster prove it). The
listener subscribes on one primary and, after a lost connection, on the next
one in turn: a dead node does not silence the events for the other gateways
or for this one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import msgspec
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError

from seckill.aiotools import reraise_if_cancelling
from seckill.redis import keys

log = logging.getLogger("seckill.events")

RECONNECT_DELAY = 0.5
SALE_CHANGED = "sale_changed"
LIMITS_CHANGED = "limits"


async def publish_sale_changed(redis: Redis, sale_id: str) -> None:
    await redis.publish(
        keys.EVENTS_CHANNEL, msgspec.json.encode({"event": SALE_CHANGED, "sale_id": sale_id})
    )


async def publish_limits_changed(redis: Redis) -> None:
    await redis.publish(keys.EVENTS_CHANNEL, msgspec.json.encode({"event": LIMITS_CHANGED}))


class Listener:
    """Hands events to this process's callbacks; ``run()`` until cancelled."""

    def __init__(
        self,
        redis: Redis | RedisCluster,
        *,
        on_sale_changed: Callable[[str], None],
        on_limits_changed: Callable[[], Awaitable[None]],
        on_subscribed: Callable[[], Awaitable[None]],
    ) -> None:
        self.redis = redis
        self.on_sale_changed = on_sale_changed
        self.on_limits_changed = on_limits_changed
        self.on_subscribed = on_subscribed
        #: True while subscribed; /readyz reports it.
        self.subscribed = False

    async def run(self) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                pubsub = await self._pubsub(attempt)
            except (RedisError, OSError) as exc:
                reraise_if_cancelling()
                log.debug("event listener: no node to subscribe on (%s)", exc)
                await asyncio.sleep(RECONNECT_DELAY)
                continue
            try:
                await pubsub.subscribe(keys.EVENTS_CHANNEL)
                await self.on_subscribed()
                self.subscribed = True
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        await self._handle(message.get("data"))
            except (RedisError, OSError) as exc:
                reraise_if_cancelling()
                if self.subscribed:
                    log.warning("event listener lost Redis (%s); reconnecting", exc)
                self.subscribed = False
                await asyncio.sleep(RECONNECT_DELAY)
            finally:
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _pubsub(self, attempt: int) -> PubSub:
        """A pub/sub of the client; in a cluster, on the primaries in turn."""
        if not isinstance(self.redis, RedisCluster):
            return self.redis.pubsub(ignore_subscribe_messages=True)
        await self.redis.initialize()
        nodes = sorted(self.redis.get_primaries(), key=lambda n: n.name)
        node = nodes[attempt % len(nodes)]
        return self.redis.pubsub(node=node, ignore_subscribe_messages=True)

    async def _handle(self, data: object) -> None:
        try:
            if not isinstance(data, str | bytes):
                raise TypeError(type(data).__name__)
            event = msgspec.json.decode(data)
            kind = event.get("event")
            if kind == SALE_CHANGED:
                self.on_sale_changed(str(event["sale_id"]))
            elif kind == LIMITS_CHANGED:
                await self.on_limits_changed()
        except (msgspec.DecodeError, AttributeError, KeyError, TypeError):
            log.warning("ignoring malformed event %r", data)
