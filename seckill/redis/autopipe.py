"""Auto-pipelining for the hot path: every EVALSHA issued in one event-loop
turn goes out in one write on one connection, and the replies come back in
one read, parsed by hiredis.

Why: through redis-py most of a buy's client CPU went to the pool checkout,
command packing and a read per reply — more than the whole bare HTTP request
(figures: docs/performance.md, "auto-pipelining"). Here concurrent buys
share a socket write and a socket read, and a reply is matched to its caller
by order (Redis answers a connection's commands in order). Each command is
still its own atomic EVALSHA: pipelining changes how commands travel, never
what one does, and an error reply fails only its own caller.

Failure rules (the same as the pooled client): nothing is ever re-sent — a
re-sent admit could admit twice — so a lost connection or a reply slower
than ``timeout`` fails every caller waiting on that connection with
redis-py's ``ConnectionError``/``TimeoutError``, and the connection is
replaced on the next call. A command that never left this process (no
connection could be opened, or the connection failed before its write) fails
with :class:`NotSent` instead: it did not run, and never will. Any other
failure leaves the command's fate unknown — Redis may have run it, or may
still run it (a stalled server runs what it already received).

The pipeline also keeps an estimate of Redis's clock (:meth:`AutoPipeline.redis_now_ms`):
``TIME`` is sent with every new connection and every ``CLOCK_SYNC`` seconds after, and
the offset to this host's monotonic clock kept. admit.lua's deadline is set
with it, so that the gateway and the script agree on it whatever the skew
between this host's wall clock and Redis's.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

import hiredis
from redis.asyncio.connection import (
    ConnectionPool,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from seckill.aiotools import reraise_if_cancelling

Arg = str | int | float | bytes


def encode(args: tuple[Arg, ...] | list[Arg]) -> bytes:
    """One command in RESP (``*N`` then ``$len`` + bytes per argument), packed
    by hiredis in C: three times faster than doing it in Python."""
    packed: bytes = hiredis.pack_command(tuple(args))  # type: ignore[arg-type]
    return packed


#: seconds aclose() waits for the socket to be let go
CLOSE_WAIT = 1.0
#: seconds between two reads of Redis's clock on a connection
CLOCK_SYNC = 30.0


class NotSent(RedisConnectionError):
    """The command never left this process: it did not run and never will."""


def _monotonic_ms() -> float:
    return time.monotonic() * 1000.0


def _time_ms(reply: list[str]) -> float:
    """A ``TIME`` reply (seconds, microseconds) in ms since the epoch."""
    return int(reply[0]) * 1000.0 + int(reply[1]) / 1000.0


class _Connection(asyncio.Protocol):
    """One pipelined connection: a FIFO of futures, one per command sent."""

    def __init__(self) -> None:
        self.reader = hiredis.Reader(encoding="utf-8")
        self.waiters: deque[tuple[float, asyncio.Future[Any]]] = deque()
        self.transport: asyncio.Transport | None = None
        self.buffer: list[bytes] = []
        self.flush_scheduled = False
        self.closed = False
        #: done once the transport has let go of its socket
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

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
        if not self.lost.done():
            self.lost.set_result(None)

    def fail(self, exc: Exception) -> None:
        """Fail every waiting caller and close: the connection is out of step.

        The commands still in the buffer (the last ones queued) were never
        written: they fail with :class:`NotSent`."""
        self.closed = True
        sent = len(self.waiters) - len(self.buffer)
        not_sent = NotSent(f"{exc} (before the command was sent)")
        while self.waiters:
            _, fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(exc if sent > 0 else not_sent)
            sent -= 1
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
            if self.transport.is_closing():
                # closed under us before connection_lost ran: uvloop's write
                # would raise RuntimeError; nothing of the buffer was sent
                self.fail(RedisConnectionError("connection to Redis closed"))
                return
            data = b"".join(self.buffer)
            self.buffer.clear()
            self.transport.write(data)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and how to connect: what redis-py's URL parser made of the URL."""

    host: str = "127.0.0.1"
    port: int = 6379
    #: a unix socket (``unix://``) instead of host and port
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    #: TLS (``rediss://``), built by redis-py from the URL's ``ssl_*`` options
    tls: ssl.SSLContext | None = None


def endpoint_of(pool: ConnectionPool) -> Endpoint:
    """The endpoint of *pool*'s connections: the auto-pipeline connects where
    and as the pooled client does, TLS options and their defaults included."""
    kwargs, kind = pool.connection_kwargs, pool.connection_class
    tls: ssl.SSLContext | None = None
    if issubclass(kind, SSLConnection):
        # redis-py's own context for these options (cert_reqs, CA, client cert…)
        tls = kind(**kwargs).ssl_context.get()
    unix = issubclass(kind, UnixDomainSocketConnection)
    host = str(kwargs.get("host") or "localhost")
    return Endpoint(
        host=host,
        port=int(kwargs.get("port") or 6379),
        path=str(kwargs["path"]) if unix else None,
        db=int(kwargs.get("db") or 0),
        username=kwargs.get("username"),
        password=kwargs.get("password"),
        tls=tls,
    )


class AutoPipeline:
    """Pipelined commands to one Redis, for the request path."""

    def __init__(self, endpoint: Endpoint, timeout: float) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self._conn: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False
        #: Redis's clock minus this host's monotonic clock, ms; until the first
        #: TIME, this host's wall clock stands in for Redis's
        self._clock_offset_ms = time.time() * 1000.0 - _monotonic_ms()
        self._clock_read_at = 0.0

    def redis_now_ms(self) -> float:
        """Now, by Redis's clock (ms since the epoch) as last read over this
        pipeline: off by at most half the round trip of that read, plus drift."""
        return _monotonic_ms() + self._clock_offset_ms

    def _read_clock(
        self, conn: _Connection, loop: asyncio.AbstractEventLoop
    ) -> asyncio.Future[Any]:
        """Send TIME on *conn*; its reply updates the clock offset."""
        sent_at = _monotonic_ms()
        fut = conn.send(encode(("TIME",)), loop)

        def read(done: asyncio.Future[Any]) -> None:
            if done.cancelled() or done.exception() is not None:
                return
            received_at = _monotonic_ms()
            self._clock_offset_ms = _time_ms(done.result()) - (sent_at + received_at) / 2
            self._clock_read_at = received_at

        fut.add_done_callback(read)
        return fut

    @classmethod
    def from_url(cls, url: str, timeout: float) -> AutoPipeline:
        """For a URL as redis-py reads it (``redis://``, ``rediss://?ssl_…``, ``unix://``)."""
        return cls(endpoint_of(ConnectionPool.from_url(url)), timeout)

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
        """Close for good: fail what waits, drop a connection still being
        opened, and wait (briefly) until the socket is let go — a loop closed
        right after would otherwise leave a TLS shutdown, and its socket,
        half done."""
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisConnectionError):
                await self._connecting
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.fail(RedisConnectionError("client closed"))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(conn.lost), CLOSE_WAIT)

    # -- connecting ------------------------------------------------------------

    async def _connect(self) -> _Connection:
        fut = self._connecting
        if fut is None:  # one attempt, shared by every caller
            fut = self._connecting = asyncio.ensure_future(self._open())
            fut.add_done_callback(self._attempt_over)
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            reraise_if_cancelling()  # this caller was cancelled: its own business
            # the attempt was cancelled under it, by aclose()
            raise NotSent("client closed") from None

    def _attempt_over(self, fut: asyncio.Future[_Connection]) -> None:
        """A connection attempt is over, whether anyone still waits for it or
        not: the next caller starts a new one (an attempt that failed after all
        its callers gave up must not fail the next caller too), and its error
        is taken."""
        if self._connecting is fut:
            self._connecting = None
        if not fut.cancelled():
            fut.exception()

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        where = self.endpoint
        try:
            if where.path is not None:
                opening = loop.create_unix_connection(_Connection, where.path)
            else:
                opening = loop.create_connection(_Connection, where.host, where.port, ssl=where.tls)
            _, conn = await asyncio.wait_for(opening, self.timeout)
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise NotSent(f"cannot connect to Redis: {exc}") from None
        sock = conn.transport.get_extra_info("socket") if conn.transport else None
        if sock is not None and where.path is None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        setup: list[asyncio.Future[Any]] = []
        if where.password:
            auth: tuple[Arg, ...] = (
                ("AUTH", where.username, where.password)
                if where.username
                else ("AUTH", where.password)
            )
            setup.append(conn.send(encode(auth), loop))
        if where.db:
            setup.append(conn.send(encode(("SELECT", where.db)), loop))
        try:
            for fut in setup:
                await asyncio.wait_for(fut, self.timeout)
        except (ResponseError, TimeoutError, RedisConnectionError) as exc:
            conn.fail(RedisConnectionError(f"Redis refused the connection setup: {exc}"))
            raise NotSent(f"Redis refused the connection setup: {exc}") from None
        except BaseException:  # cancelled (aclose) mid-setup: close it, not the GC
            conn.fail(RedisConnectionError("client closed"))
            raise
        if self._closed:  # closed while this connection was being opened
            conn.fail(RedisConnectionError("client closed"))
            raise NotSent("client closed")
        self._conn = conn
        # not waited for: the first commands go out with the last estimate
        # (this host's wall clock before any), and are not held up by it
        self._read_clock(conn, loop)
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
            if _monotonic_ms() - self._clock_read_at > CLOCK_SYNC * 1000:
                self._clock_read_at = _monotonic_ms()  # one read in flight at a time
                self._read_clock(conn, asyncio.get_running_loop())
            self._arm_watchdog()
