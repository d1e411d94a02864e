"""The application factory: ``create_app(settings, redis_url, admin_token)``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from seckill import peers
from seckill.auth import identity_for
from seckill.events import Listener
from seckill.middleware import errors_middleware
from seckill.redis_client import close_redis, make_redis
from seckill.routes import admin, customer, health
from seckill.scripts import Scripts
from seckill.settings import Settings
from seckill.state import ADMIN_TOKEN, IDENTIFY, RUNTIME, SETTINGS, Runtime

log = logging.getLogger("seckill.app")

#: aiohttp's own cap on any body; customer routes enforce 4 KiB themselves.
CLIENT_MAX_SIZE = 64 * 1024

CleanupCtx = Callable[[web.Application], AsyncIterator[None]]


def background(make: Callable[[Runtime], Coroutine[Any, Any, None]]) -> CleanupCtx:
    """A cleanup context that runs ``make(runtime)`` as a task for the app's lifetime."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(make(app[RUNTIME]))
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return ctx


def create_app(settings: Settings, redis_url: str, admin_token: str) -> web.Application:
    app = web.Application(middlewares=[errors_middleware], client_max_size=CLIENT_MAX_SIZE)
    app[SETTINGS] = settings
    app[ADMIN_TOKEN] = admin_token
    app[IDENTIFY] = identity_for(settings)
    app.add_routes(customer.routes)
    app.add_routes(admin.routes)
    app.add_routes(health.routes)

    async def runtime_ctx(app: web.Application) -> AsyncIterator[None]:
        redis = make_redis(redis_url, settings)
        rt = Runtime(redis=redis, scripts=Scripts(redis))
        rt.listener = Listener(redis, rt.cache, rt.reload_limits)
        try:
            await rt.reload_limits()  # serve the first request with the stored limits
        except (RedisError, OSError) as exc:
            log.warning("could not read the stored limits yet (%s); will retry", exc)
        app[RUNTIME] = rt
        yield
        await close_redis(redis)

    def listen(rt: Runtime) -> Coroutine[Any, Any, None]:
        assert rt.listener is not None
        return rt.listener.run()

    def heartbeat(rt: Runtime) -> Coroutine[Any, Any, None]:
        return peers.heartbeat(rt.redis, peers.process_id(), rt.set_processes)

    app.cleanup_ctx.extend([runtime_ctx, background(listen), background(heartbeat)])
    return app
