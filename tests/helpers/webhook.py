"""A real local HTTP server to act as the shop's webhook in tests.

It records every delivery (raw count and distinct order ids by
Idempotency-Key), the highest number of deliveries in flight at once, and
answers as told: ``fail`` = 500 (or ``fail_status``, e.g. 400 or 429),
``delay`` = seconds before answering, ``gate`` = an Event every delivery
waits for, ``late`` = seconds to wait *after* storing the order before
answering (a slow shop that has the order but answers past the timeout).
Status events (issue 15: ``"event": "status"``, ``Idempotency-Key:
<order_id>:<status>``) are recorded apart, in ``statuses``; an order in
``pay`` is answered ``{"paid": true}``.
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from typing import Any

from aiohttp import web


class Webhook:
    def __init__(self) -> None:
        # bound here and handed to the server: the port is ours from now on
        # (no free-port-then-bind race with another test's server)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port = int(self._sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}/orders"
        self.raw = 0
        self.by_key: Counter[str] = Counter()
        self.bodies: dict[str, dict[str, Any]] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.fail = False
        self.fail_status = 500
        self.delay = 0.0
        self.late = 0.0
        self.gate: asyncio.Event | None = None
        #: status events by Idempotency-Key (each count), and their bodies
        self.status_keys: Counter[str] = Counter()
        self.statuses: dict[str, dict[str, Any]] = {}
        #: order ids answered {"paid": true}; every order when pay_all
        self.pay: set[str] = set()
        self.pay_all = False
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if self.delay:
                await asyncio.sleep(self.delay)  # the slow shop backend being simulated
            self.raw += 1
            if self.fail:
                return web.json_response({"error": "down"}, status=self.fail_status)
            key = request.headers["Idempotency-Key"]
            body = await request.json()
            if body.get("event") == "status":
                assert key == f"{body['order_id']}:{body['status']}"
                self.status_keys[key] += 1
                self.statuses[key] = body
                return web.json_response({"ok": True})
            assert body["order_id"] == key
            self.by_key[key] += 1
            self.bodies[key] = body
            if self.late:
                await asyncio.sleep(self.late)  # stored; the answer comes too late
            if self.pay_all or key in self.pay:
                return web.json_response({"ok": True, "paid": True})
            return web.json_response({"ok": True})
        finally:
            self.in_flight -= 1

    @property
    def delivered(self) -> set[str]:
        return set(self.by_key)

    async def start(self) -> Webhook:
        app = web.Application()
        app.router.add_post("/orders", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.SockSite(self._runner, self._sock).start()
        return self

    async def stop(self) -> None:
        if self.gate is not None:
            self.gate.set()
        if self._runner is not None:
            await self._runner.cleanup()
        self._sock.close()
