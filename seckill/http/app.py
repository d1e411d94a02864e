"""The application factory: ``create_app(settings, redis_url, admin_token)``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError

from seckill import metrics
from seckill.http.auth import identity_for
from seckill.http.responses import add_routes
from seckill.http.routes import admin, customer, dashboard, health
from seckill.http.routes import metrics as metrics_routes
from seckill.http.routes import openapi as openapi_routes
from seckill.http.state import ADMIN_TOKEN, IDENTIFY, RUNTIME, SETTINGS, Runtime
from seckill.pipeline.consumer import Pipeline
from seckill.pipeline.sinks import sink_from_url
from seckill.redis import peers
from seckill.redis.client import connect
from seckill.redis.events import Listener, publish_sale_changed
from seckill.redis.scripts import Scripts, reconcile_forever
from seckill.settings import Settings

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


def consumer_name(settings: Settings, process_index: int) -> str:
    """This process's name in the stream consumer groups: stable across restarts
    (so a restarted process re-delivers its own pending entries at once) and
    distinct for every gateway process of a host (host, port, process slot)."""
    return f"{socket.gethostname()}:{settings.port}:{process_index}"


def create_app(
    settings: Settings, redis_url: str, admin_token: str, process_index: int = 0
) -> web.Application:
    app = web.Application(client_max_size=CLIENT_MAX_SIZE)
    app[SETTINGS] = settings
    app[ADMIN_TOKEN] = admin_token
    app[IDENTIFY] = identity_for(settings)
    # the buy route first: the router tries the resources of a path prefix in order
    add_routes(
        app,
        [
            customer.routes,
            admin.routes,
            health.routes,
            metrics_routes.routes,
            dashboard.routes,
            openapi_routes.routes,
        ]
        if settings.admits
        # a worker: the probes and the metrics; every other path is 404
        else [health.routes, metrics_routes.routes],
    )

    async def runtime_ctx(app: web.Application) -> AsyncIterator[None]:
        clients = connect(
            redis_url, pool_size=settings.redis_pool_size, timeout=settings.redis_timeout
        )
        rt = Runtime(clients=clients, scripts=Scripts(clients, admit_batch=settings.admit_batch))
        rt.listener = Listener(
            clients.redis,
            on_sale_changed=rt.cache.changed,
            on_limits_changed=rt.reload_limits,
            on_subscribed=rt.resubscribed,
        )
        try:
            await rt.reload_limits()  # serve the first request with the stored limits
        except (RedisError, OSError) as exc:
            log.warning("could not read the stored limits yet (%s); will retry", exc)
        app[RUNTIME] = rt
        yield
        await clients.aclose()

    def listen(rt: Runtime) -> Coroutine[Any, Any, None]:
        assert rt.listener is not None
        return rt.listener.run()

    def heartbeat(rt: Runtime) -> Coroutine[Any, Any, None]:
        return peers.heartbeat(rt.redis, peers.process_id(), rt.set_processes)

    def watch_sales(rt: Runtime) -> Coroutine[Any, Any, None]:
        return rt.watch_sales()

    async def pipeline_ctx(app: web.Application) -> AsyncIterator[None]:
        rt = app[RUNTIME]

        async def released(sale_id: str) -> None:
            await publish_sale_changed(rt.redis, sale_id)

        sink = sink_from_url(settings.sink_url, timeout=settings.delivery_timeout)
        pipeline = Pipeline(
            rt.clients,
            rt.scripts,
            sink,
            settings.pipeline_options(),
            consumer_name(settings, process_index),
            released,
        )
        await pipeline.start()
        rt.pipeline = pipeline
        yield
        await pipeline.stop()

    def flush_metrics(rt: Runtime) -> Coroutine[Any, Any, None]:
        return metrics.flush_forever()

    def reconcile(rt: Runtime) -> Coroutine[Any, Any, None]:
        return reconcile_forever(rt.redis, rt.scripts)

    # a gateway admits (listens to events, counts itself in the shield's
    # divisor, finishes interrupted bucket transfers); a worker delivers;
    # role "all" does both
    contexts: list[CleanupCtx] = [runtime_ctx, background(flush_metrics)]
    if settings.admits:
        contexts += [background(listen), background(heartbeat), background(reconcile)]
    if settings.delivers:
        contexts.append(pipeline_ctx)
    else:  # no pipeline to learn the sales from: the buy metrics' labels need them
        contexts.append(background(watch_sales))
    app.cleanup_ctx.extend(contexts)
    return app
