"""Auto-pipelining for the hot path: every EVALSHA issued in one event-loop
turn goes out in one write on one connection, and the replies come back in
one read, parsed by hiredis.

Why: through redis-py a buy costs ~110 µs of client CPU (pool checkout,
command packing, a read per reply), three times the whole bare HTTP request.
Here concurrent buys share a socket write and a socket read, and a reply is
matched to its caller by order (Redis answers a connection's commands in
order). Each command is still its own atomic EVALSHA: pipelining changes how
commands travel, never what one does, and an error reply fails only its own
caller.

Failure rules (the same as the pooled client): nothing is ever re-sent — a
re-sent admit could admit twice — so a lost connection or a reply slower than
``timeout`` fails every caller waiting on that connection with
redis-py's ``ConnectionError``/``TimeoutError`` (→ 503), and the connection is replaced
on the next call.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections import deque
from collections.abc import Awaitable
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

Arg = str | int | float | bytes


def encode(args: tuple[Arg, ...] | list[Arg]) -> bytes:
    """One command in RESP (``*N`` then ``$len`` + bytes per argument), packed
    by hiredis in C: three times faster than doing it in Python."""
    packed: bytes = hiredis.pack_command(tuple(args))  # type: ignore[arg-type]
    return packed


class _Connection(asyncio.Protocol):
    """One pipelined connection: a FIFO of futures, one per command sent."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader(encoding="utf-8")
        self.waiters: deque[tuple[float, asyncio.Future[Any]]] = deque()
        self.transport: asyncio.Transport | None = None
        self.buffer: list[bytes] = []
        self.flush_scheduled = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: duck-type it
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        waiters = self.waiters
        while True:
            reply = self.reader.gets()
            if reply is False:
                return
            if not waiters:  # a reply nobody asked for: the stream is out of step
                self.fail(RedisConnectionError("unexpected reply from Redis"))
                return
            _, fut = waiters.popleft()
            if not fut.done():
                if isinstance(reply, hiredis.ReplyError):
                    fut.set_exception(ResponseError(str(reply)))
                else:
                    fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(RedisConnectionError(f"connection to Redis lost: {exc or 'closed'}"))

    def fail(self, exc: Exception) -> None:
        """Fail every waiting caller and close: the connection is out of step."""
        self.closed = True
        while self.waiters:
            _, fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(exc)
        self.buffer.clear()
        if self.transport is not None:
            self.transport.close()

    def send(self, command: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
        fut = loop.create_future()
        self.waiters.append((time.monotonic(), fut))
        self.buffer.append(command)
        if not self.flush_scheduled:
            self.flush_scheduled = True
            loop.call_soon(self.flush)
        return fut

    def flush(self) -> None:
        self.flush_scheduled = False
        if self.buffer and self.transport is not None and not self.closed:
            data = b"".join(self.buffer)
            self.buffer.clear()
            self.transport.write(data)


class AutoPipeline:
    """Pipelined commands to one Redis, for the request path."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self._conn: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        self._watchdog: asyncio.TimerHandle | None = None

    def execute(self, *args: Arg) -> Awaitable[Any]:
        """The reply to one command, to await. Connected (the usual case), that is
        the command's future itself: no coroutine of its own on the hot path."""
        conn = self._conn
        if conn is None or conn.closed:
            return self._connect_and_send(args)
        return conn.send(encode(args), asyncio.get_running_loop())

    async def _connect_and_send(self, args: tuple[Arg, ...]) -> Any:
        conn = await self._connect()
        return await conn.send(encode(args), asyncio.get_running_loop())

    async def aclose(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._conn is not None:
            self._conn.fail(RedisConnectionError("client closed"))
            self._conn = None

    # -- connecting ------------------------------------------------------------

    async def _connect(self) -> _Connection:
        if self._connecting is None:  # one attempt, shared by every caller
            self._connecting = asyncio.ensure_future(self._open())
        fut = self._connecting
        try:
            return await asyncio.shield(fut)
        finally:
            if fut.done():
                self._connecting = None

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        parts = urlsplit(self.url)
        try:
            if parts.scheme == "unix":
                _, conn = await asyncio.wait_for(
                    loop.create_unix_connection(_Connection, unquote(parts.path)), self.timeout
                )
            else:
                tls = ssl.create_default_context() if parts.scheme == "rediss" else None
                _, conn = await asyncio.wait_for(
                    loop.create_connection(
                        _Connection, parts.hostname or "127.0.0.1", parts.port or 6379, ssl=tls
                    ),
                    self.timeout,
                )
        except (OSError, TimeoutError) as exc:
            raise RedisConnectionError(f"cannot connect to Redis: {exc}") from None
        sock = conn.transport.get_extra_info("socket") if conn.transport else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        setup: list[asyncio.Future[Any]] = []
        if parts.password:
            user = unquote(parts.username) if parts.username else None
            auth: tuple[Arg, ...] = (
                ("AUTH", user, unquote(parts.password))
                if user
                else (
                    "AUTH",
                    unquote(parts.password),
                )
            )
            setup.append(conn.send(encode(auth), loop))
        db = _db_of(parts.path, parts.query)
        if db:
            setup.append(conn.send(encode(("SELECT", db)), loop))
        try:
            for fut in setup:
                await asyncio.wait_for(fut, self.timeout)
        except (ResponseError, TimeoutError, RedisConnectionError) as exc:
            conn.fail(RedisConnectionError(f"Redis refused the connection setup: {exc}"))
            raise RedisConnectionError(f"Redis refused the connection setup: {exc}") from None
        self._conn = conn
        self._arm_watchdog()
        return conn

    # -- timeouts ----------------------------------------------------------------

    def _arm_watchdog(self) -> None:
        if self._watchdog is None:
            loop = asyncio.get_running_loop()
            self._watchdog = loop.call_later(min(0.25, self.timeout / 4), self._check)

    def _check(self) -> None:
        """A connection whose oldest reply is overdue is hung: fail it, all of it.

        One timer per client instead of one per call keeps timeouts off the
        hot path's cost."""
        self._watchdog = None
        conn = self._conn
        if conn is not None and not conn.closed and conn.waiters:
            started, _ = conn.waiters[0]
            if time.monotonic() - started > self.timeout:
                conn.fail(RedisTimeoutError(f"Redis did not answer within {self.timeout}s"))
        if conn is not None and not conn.closed:
            self._arm_watchdog()


def _db_of(path: str, query: str) -> int:
    for pair in query.split("&"):
        key, _, value = pair.partition("=")
        if key == "db" and value.isdigit():
            return int(value)
    db = path.strip("/")
    return int(db) if db.isdigit() else 0
