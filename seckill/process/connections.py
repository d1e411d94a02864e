"""Connection hygiene on the gateway's listening socket.

aiohttp reaps idle keep-alive connections (``keepalive_timeout``) but has no
deadline for a request head: a client that sends half a head holds its
socket (and a file descriptor) for as long as the keep-alive timeout, and a
few hundred such sockets lock real customers out. :class:`ConnectionGuard`
is the protocol factory of the listening socket instead of aiohttp's own:

- **head timeout**: a connection must deliver a whole request head within
  ``head_timeout`` seconds of opening, and a kept-alive one within
  ``head_timeout`` of the first byte of its next request; else it is closed
  without an answer (nothing was asked yet);
- **connection cap**: past ``max_connections`` open connections in this
  process, a new connection is answered at once with a canned 503
  ``overloaded`` and closed, without parsing anything: a flood of sockets
  costs little and never pushes the process into EMFILE.

The head timeout overrides ``finish_response`` of aiohttp's ``RequestHandler``
and reads two of its attributes (``_request_count``, ``_waiter``): aiohttp
has no public hook for "a head arrived"; ``tests/process/test_connections.py``
fails if they change.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from seckill.schemas import Error, encode

log = logging.getLogger("seckill.server")

#: at most one warning about refused connections per this many seconds
REFUSAL_LOG_EVERY = 10.0
#: seconds a refused connection may linger (reading what the client sent)
#: after its 503, so that closing it does not reset the answer away.
REFUSAL_LINGER = 1.0


def _refusal() -> bytes:
    body = encode(
        Error(
            "overloaded",
            "Too many open connections to this gateway process; try again shortly.",
        )
    )
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Retry-After: 1\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


REFUSAL = _refusal()


class ConnectionGuard:
    """The protocol factory: a guarded aiohttp handler per connection, or a
    refusal past the cap. Counts what it did (for logs and tests)."""

    def __init__(
        self,
        server: web.Server,
        handler_kwargs: dict[str, Any],
        head_timeout: float,
        max_connections: int,
    ) -> None:
        self.server = server
        self.handler_kwargs = handler_kwargs
        self.head_timeout = head_timeout
        self.max_connections = max_connections
        #: connections handed to aiohttp and not closed yet
        self.open = 0
        self.refused = 0
        self.head_timeouts = 0
        self._refused_logged = 0
        self._last_log = -REFUSAL_LOG_EVERY

    def __call__(self) -> asyncio.BaseProtocol:
        if self.open >= self.max_connections:
            self.refused += 1
            self._log_refusals()
            return _Refusal()
        self.open += 1  # counted here: a burst of accepts runs before connection_made
        return _GuardedHandler(
            self, self.server, loop=asyncio.get_running_loop(), **self.handler_kwargs
        )

    def _log_refusals(self) -> None:
        now = asyncio.get_running_loop().time()
        if now - self._last_log >= REFUSAL_LOG_EVERY:
            log.warning(
                "%d open connections (--max-connections): refused %d new ones since "
                "the last warning with 503 overloaded",
                self.open,
                self.refused - self._refused_logged,
            )
            self._last_log, self._refused_logged = now, self.refused


class _GuardedHandler(RequestHandler):
    """aiohttp's handler, with a deadline on every request head.

    The deadline runs from the opening of the connection, and from bytes that
    arrive while no request is being handled or after the last response went
    out (the start of the next head). Bytes that arrive while a request is
    handled (its body, or a pipelined head) arm no deadline: after that
    response the keep-alive timeout applies.
    """

    __slots__ = ("_armed_at", "_guard", "_head_timer", "_heads_seen", "_last_done")

    def __init__(self, guard: ConnectionGuard, manager: web.Server, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._head_timer: asyncio.TimerHandle | None = None
        self._heads_seen = 0
        self._armed_at = 0.0
        #: loop time when the last response was finished (-inf: none yet)
        self._last_done = float("-inf")

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._request_count != self._heads_seen:  # a whole head arrived
            self._heads_seen = self._request_count
            self._disarm()
        elif self._head_timer is None:
            self._arm()  # maybe the first bytes of the next request

    async def finish_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().finish_response(*args, **kwargs)
        finally:
            self._last_done = self._loop.time()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        self._guard.open -= 1
        super().connection_lost(exc)

    def _idle(self) -> bool:
        """Waiting for a request head (no request being handled)."""
        waiter = self._waiter
        return waiter is not None and not waiter.done()

    def _arm(self) -> None:
        self._disarm()
        self._armed_at = self._loop.time()
        self._head_timer = self._loop.call_later(self._guard.head_timeout, self._head_expired)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if self._request_count != self._heads_seen:
            return
        if not self._idle():
            self._arm()  # a request is being handled: look again later
        elif self._armed_at >= self._last_done:
            self._guard.head_timeouts += 1
            log.debug("closing a connection that sent no whole request head in time")
            self.force_close()


class _Refusal(asyncio.Protocol):
    """Past the cap: the canned 503 at once, then close (lingering up to
    REFUSAL_LINGER seconds for the client to read it and hang up)."""

    def __init__(self) -> None:
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass: no isinstance here
        transport = cast(asyncio.Transport, transport)
        transport.write(REFUSAL)
        if transport.can_write_eof():
            transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(REFUSAL_LINGER, transport.abort)

    def data_received(self, data: bytes) -> None:
        pass  # the request: read and dropped

    def eof_received(self) -> bool:
        return False  # the client hung up: close

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()


class GuardedSite(web.BaseSite):
    """A TCP site (SO_REUSEPORT) whose connections go through a ConnectionGuard."""

    __slots__ = ("_guard", "_host", "_port")

    def __init__(
        self, runner: web.BaseRunner, guard: ConnectionGuard, host: str, port: int, backlog: int
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._guard, self._host, self._port = guard, host, port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._guard, self._host, self._port, backlog=self._backlog, reuse_port=True
        )
