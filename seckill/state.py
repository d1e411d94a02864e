"""Typed application keys: everything a handler reaches through ``request.app``."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiohttp import web
from redis.asyncio import Redis

from seckill.auth import Identify
from seckill.limits import Limits
from seckill.sales import SaleCache
from seckill.scripts import Scripts
from seckill.settings import Settings


@dataclass(slots=True)
class Runtime:
    """Mutable per-process state, built by the app's cleanup contexts."""

    redis: Redis
    scripts: Scripts
    cache: SaleCache = field(default_factory=SaleCache)
    limits: Limits = field(default_factory=Limits)
    #: False until the event listener has subscribed; /readyz reports it.
    listening: bool = False


SETTINGS = web.AppKey("settings", Settings)
ADMIN_TOKEN = web.AppKey("admin_token", str)
IDENTIFY: web.AppKey[Identify] = web.AppKey("identify")
RUNTIME = web.AppKey("runtime", Runtime)
