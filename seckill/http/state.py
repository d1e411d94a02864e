"""Typed application keys: everything a handler reaches through ``request.app``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web
from redis.asyncio import Redis
from redis.exceptions import RedisError

from seckill.aiotools import reraise_if_cancelling
from seckill.core import limits
from seckill.core.cache import SaleCache
from seckill.core.shield import LocalShield
from seckill.http.auth import Identify
from seckill.pipeline.consumer import Pipeline
from seckill.redis import keys
from seckill.redis.client import RedisClients
from seckill.redis.events import Listener
from seckill.redis.scripts import Scripts
from seckill.schemas import Limits, encode
from seckill.settings import Settings

log = logging.getLogger("seckill.limits")

#: seconds between reads of the sale index in a process without a pipeline
SALES_INTERVAL = 1.0


@dataclass(slots=True)
class Runtime:
    """Mutable per-process state, built by the app's cleanup contexts."""

    #: the pooled client and the auto-pipeline of this process
    clients: RedisClients
    scripts: Scripts
    cache: SaleCache = field(default_factory=SaleCache)
    limits: Limits = field(default_factory=Limits)
    shield: LocalShield = field(default_factory=LocalShield)
    #: live gateway processes, cluster-wide (from the heartbeat).
    processes: int = 1
    listener: Listener | None = None
    pipeline: Pipeline | None = None
    #: sale ids in the index, kept by ``watch_sales`` where no pipeline runs
    sales: set[str] = field(default_factory=set)

    @property
    def known_sales(self) -> set[str]:
        """The sales that exist (a buy's metrics label only those)."""
        return self.pipeline.sales if self.pipeline is not None else self.sales

    async def watch_sales(self) -> None:
        """Without a pipeline (role gateway): re-read the sale index every
        second, until cancelled."""
        while True:
            try:
                self.sales = await self.redis.smembers(keys.SALES_INDEX)  # type: ignore[misc, assignment]
            except (RedisError, OSError) as exc:
                reraise_if_cancelling()
                log.debug("could not read the sale index: %s", exc)
            await asyncio.sleep(SALES_INTERVAL)

    @property
    def redis(self) -> Redis:
        """The pooled redis-py client (everything but the hot path)."""
        return self.clients.redis

    @property
    def listening(self) -> bool:
        """True while the event listener is subscribed; /readyz reports it."""
        return self.listener is not None and self.listener.subscribed

    async def reload_limits(self) -> None:
        self.apply_limits(await limits.load(self.redis))

    async def resubscribed(self) -> None:
        """The event listener (re)subscribed: it may have missed events, so
        forget every cached sale and re-read the limits."""
        self.cache.changed_all()
        await self.reload_limits()

    def apply_limits(self, new: Limits) -> None:
        if new != self.limits:
            # one line per process: operators (and tests) see when each applied it
            log.info("limits now in force here: %s", encode(new).decode())
        self.limits = new
        self.shield.configure(new, self.processes)

    def set_processes(self, count: int) -> None:
        if count != self.processes:
            self.processes = count
            self.shield.configure(self.limits, count)


SETTINGS = web.AppKey("settings", Settings)
ADMIN_TOKEN = web.AppKey("admin_token", str)
IDENTIFY: web.AppKey[Identify] = web.AppKey("identify")
RUNTIME = web.AppKey("runtime", Runtime)
#: None while the Redis server this gateway runs (the embedded one) is up, else
#: why not; absent with an external Redis (/healthz, /readyz)
SERVER_PROBLEM: web.AppKey[Callable[[], str | None]] = web.AppKey("server_problem")
