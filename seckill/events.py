"""Cluster-wide events over Redis pub/sub: "this sale changed".

Every gateway process listens on one channel. A restock, an update or a
cancel publishes ``{"event": "sale_changed", "sale_id": S}``; each process
then drops its cached view and sold-out flag for S. When the listener's
connection drops, anything may have been missed, so on every (re)subscribe
the process forgets all it cached.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from seckill import keys
from seckill.sales import SaleCache

log = logging.getLogger("seckill.events")

RECONNECT_DELAY = 0.5


async def publish_sale_changed(redis: Redis, sale_id: str) -> None:
    await redis.publish(
        keys.EVENTS_CHANNEL, orjson.dumps({"event": "sale_changed", "sale_id": sale_id})
    )


def _handle(message: dict[str, object], cache: SaleCache) -> None:
    try:
        event = orjson.loads(message["data"])  # type: ignore[arg-type]
        if event.get("event") == "sale_changed":
            cache.changed(str(event["sale_id"]))
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
        log.warning("ignoring malformed event %r", message.get("data"))


async def listen(
    redis: Redis,
    cache: SaleCache,
    on_subscribed: Callable[[], Awaitable[None]] | None = None,
    on_lost: Callable[[], None] | None = None,
) -> None:
    """Run until cancelled: apply events to *cache*, reconnecting on errors.

    *on_subscribed* runs after every (re)subscribe, *on_lost* when the
    subscription breaks.
    """
    while True:
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(keys.EVENTS_CHANNEL)
            cache.changed_all()
            if on_subscribed is not None:
                await on_subscribed()
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is not None:
                    _handle(message, cache)
        except (RedisError, OSError) as exc:
            log.warning("event listener lost Redis (%s); reconnecting", exc)
            if on_lost is not None:
                on_lost()
            await asyncio.sleep(RECONNECT_DELAY)
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
