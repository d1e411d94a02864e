"""The application factory: ``create_app(settings, redis_url)``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from seckill import events
from seckill.auth import identity_for
from seckill.middleware import errors_middleware
from seckill.redis_client import close_redis, make_redis
from seckill.routes import admin, customer, health
from seckill.scripts import Scripts
from seckill.settings import Settings
from seckill.state import ADMIN_TOKEN, IDENTIFY, RUNTIME, SETTINGS, Runtime

log = logging.getLogger("seckill.app")

#: aiohttp's own cap on any body; customer routes enforce 4 KiB themselves.
CLIENT_MAX_SIZE = 64 * 1024


def create_app(settings: Settings, redis_url: str, admin_token: str) -> web.Application:
    app = web.Application(middlewares=[errors_middleware], client_max_size=CLIENT_MAX_SIZE)
    app[SETTINGS] = settings
    app[ADMIN_TOKEN] = admin_token
    app[IDENTIFY] = identity_for(settings)
    app.add_routes(customer.routes)
    app.add_routes(admin.routes)
    app.add_routes(health.routes)

    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        redis = make_redis(redis_url, settings)
        app[RUNTIME] = Runtime(redis=redis, scripts=Scripts(redis))
        yield
        await close_redis(redis)

    async def events_ctx(app: web.Application) -> AsyncIterator[None]:
        rt = app[RUNTIME]

        async def subscribed() -> None:
            rt.listening = True

        def lost() -> None:
            rt.listening = False

        task = asyncio.create_task(events.listen(rt.redis, rt.cache, subscribed, lost))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.extend([redis_ctx, events_ctx])
    return app
