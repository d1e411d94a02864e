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

In a Redis Cluster (:class:`AutoPipeline` with *seeds*) there is one such
connection per primary, and a command goes to the primary serving its key
(the slot map from ``CLUSTER SLOTS``). The redirections that prove a command
did not run (MOVED, ASK, TRYAGAIN, CLUSTERDOWN) are followed; everything else
above holds per connection (docs/architecture.md, "Redis Cluster").

The pipeline also keeps an estimate of Redis's clock (:meth:`AutoPipeline.redis_now_ms`):
``TIME`` is sent with every new connection and every ``CLOCK_SYNC`` seconds after, and
the offset to this host's monotonic clock kept. admit.lua's deadline is set
with it, so that the gateway and the script agree on it whatever the skew
between this host's wall clock and Redis's.
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import dataclasses
import socket
import ssl
import time
from collections import Counter, deque
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


class _Node:
    """One endpoint (the server, or one cluster primary) and its pipelined
    connection, opened on demand and shared by every caller."""

    __slots__ = ("address", "conn", "connecting", "endpoint")

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.address = f"{endpoint.host}:{endpoint.port}"
        self.conn: _Connection | None = None
        self.connecting: asyncio.Future[_Connection] | None = None


#: redirections (MOVED, ASK, TRYAGAIN, CLUSTERDOWN) one command may follow
MAX_REDIRECTS = 16
#: seconds between two tries of a command answered TRYAGAIN or CLUSTERDOWN
REDIRECT_BACKOFF = 0.02
#: seconds between two refreshes of the slot map started by lost connections
REFRESH_INTERVAL = 1.0
SLOTS = 16384


def command_key(args: tuple[Arg, ...]) -> Arg | None:
    """The key a command is routed by in a cluster: EVALSHA/EVAL by their first
    key, other commands by their first argument, and None (any node) for
    keyless ones (PING, TIME, SCRIPT, a script with no keys…)."""
    name = str(args[0]).upper() if args else ""
    if name in ("EVALSHA", "EVAL", "EVALSHA_RO", "EVAL_RO", "FCALL", "FCALL_RO"):
        return args[3] if len(args) > 3 and int(args[2]) > 0 else None
    if name in _KEYLESS or len(args) < 2:
        return None
    return args[1]


_KEYLESS = frozenset(
    ("PING", "TIME", "ECHO", "INFO", "SCRIPT", "CLUSTER", "FUNCTION", "DBSIZE", "ASKING")
)


def slot_of(key: Arg) -> int:
    """The cluster slot of *key* (CRC16 of its hash tag, or of the whole key)."""
    raw = key if isinstance(key, bytes) else str(key).encode()
    start = raw.find(b"{")
    if start >= 0:
        end = raw.find(b"}", start + 1)
        if end > start + 1:
            raw = raw[start + 1 : end]
    return binascii.crc_hqx(raw, 0) % SLOTS


def _redirect(message: str) -> tuple[str, int, str] | None:
    """(kind, slot, "host:port") of a MOVED/ASK reply; (kind, -1, "") of a
    TRYAGAIN or CLUSTERDOWN; None for any other error. Each of these says the
    command did not run."""
    word, _, rest = message.partition(" ")
    if word in ("MOVED", "ASK"):
        slot, _, address = rest.partition(" ")
        return word, int(slot), address.strip()
    if word in ("TRYAGAIN", "CLUSTERDOWN"):
        return word, -1, ""
    return None


class AutoPipeline:
    """Pipelined commands to one Redis, or to every primary of a Redis Cluster,
    for the request path.

    One server: one connection, every command on it (the cost described at
    the top of this module). A cluster (*seeds* given): one pipelined
    connection per primary, and a slot map read from ``CLUSTER SLOTS``; a
    command goes to the primary serving its key (:func:`command_key`), a
    keyless one to any primary. A ``MOVED``, ``ASK`` (sent again after
    ``ASKING`` on the target's connection), ``TRYAGAIN`` or ``CLUSTERDOWN``
    reply says the command did not run: the map is refreshed and the command
    sent again, at most :data:`MAX_REDIRECTS` times and within ``timeout``,
    then it fails with :class:`NotSent`. A lost connection fails its callers
    exactly as with one server: nothing that may have run is ever re-sent.
    """

    def __init__(
        self, endpoint: Endpoint, timeout: float, *, seeds: list[tuple[str, int]] | None = None
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        #: every endpoint, by "host:port" (one, without a cluster)
        self._nodes: dict[str, _Node] = {}
        self._single: _Node | None = None
        #: a cluster: its seed nodes, and the primary serving each slot (None
        #: until the map is first read)
        self._seeds: list[_Node] = []
        self._slots: list[_Node | None] | None = None
        self._refreshing: asyncio.Future[None] | None = None
        self._refreshed_at = 0.0
        #: redirections followed so far, by kind (MOVED, ASK, TRYAGAIN, CLUSTERDOWN)
        self.redirected: Counter[str] = Counter()
        if seeds:
            self._seeds = [self._node(host, port) for host, port in seeds]
        else:
            self._single = self._node(endpoint.host, endpoint.port)
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False
        #: Redis's clock minus this host's monotonic clock, ms; until the first
        #: TIME, this host's wall clock stands in for Redis's
        self._clock_offset_ms = time.time() * 1000.0 - _monotonic_ms()
        self._clock_read_at = 0.0

    @property
    def cluster(self) -> bool:
        """True when this pipeline routes by slot across a cluster's primaries."""
        return self._single is None

    @property
    def _conn(self) -> _Connection | None:
        """The connection (one server), or the first open one (a cluster)."""
        if self._single is not None:
            return self._single.conn
        return next((n.conn for n in self._nodes.values() if n.conn is not None), None)

    def _node(self, host: str, port: int) -> _Node:
        address = f"{host}:{port}"
        node = self._nodes.get(address)
        if node is None:
            node = self._nodes[address] = _Node(
                dataclasses.replace(self.endpoint, host=host, port=port)
            )
        return node

    def redis_now_ms(self) -> float:
        """Now, by Redis's clock (ms since the epoch) as last read over this
        pipeline: off by at most half the round trip of that read, plus drift
        (in a cluster, the clock of the primary read last: the primaries' clocks
        are assumed in step, as NTP keeps them)."""
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
        """For a URL as redis-py reads it (``redis://``, ``rediss://?ssl_…``,
        ``unix://``), or a cluster's (``redis+cluster://h:p,h:p``)."""
        from seckill.redis.cluster_url import parse_cluster_url

        cluster = parse_cluster_url(url)
        if cluster is not None:
            pool = ConnectionPool.from_url(cluster.node_url)
            return cls(endpoint_of(pool), timeout, seeds=cluster.seeds)
        return cls(endpoint_of(ConnectionPool.from_url(url)), timeout)

    def execute(self, *args: Arg) -> Awaitable[Any]:
        """The reply to one command, to await. Connected (the usual case), that is
        the command's future itself: no coroutine of its own on the hot path
        (in a cluster, a coroutine follows the redirections)."""
        node = self._single
        if node is None:
            return self._routed(args)
        conn = node.conn
        if conn is None or conn.closed:
            return self._connect_and_send(node, args)
        return conn.send(encode(args), asyncio.get_running_loop())

    def execute_for(self, key: Arg, *args: Arg) -> Awaitable[Any]:
        """Like :meth:`execute`, sent where *key* is served (a keyless command
        such as ``SCRIPT LOAD`` for one node of a cluster)."""
        if self._single is None:
            return self._routed(args, key)
        return self.execute(*args)

    def flush(self) -> None:
        """Write every command buffered so far now, instead of at the next
        loop turn (a caller that gathered its commands for a turn already)."""
        for node in self._nodes.values():
            conn = node.conn
            if conn is not None and conn.buffer:
                conn.flush()

    def address_of(self, key: Arg) -> str:
        """``host:port`` of the node serving *key* as last known ("" before
        the slot map is read; the one server's address without a cluster)."""
        if self._single is not None:
            return self._single.address
        node = None if self._slots is None else self._slots[slot_of(key)]
        return "" if node is None else node.address

    def primaries(self) -> list[str]:
        """``host:port`` of every primary in the slot map ([] before it is
        read; the one server's address without a cluster)."""
        if self._single is not None:
            return [self._single.address]
        if self._slots is None:
            return []
        return list(dict.fromkeys(n.address for n in self._slots if n is not None))

    def execute_at(self, address: str, *args: Arg) -> Awaitable[Any]:
        """One command to the node at *address* (``host:port``), wherever its
        keys live: no redirection is followed (``SCRIPT LOAD`` on every primary)."""
        host, _, port = address.rpartition(":")
        node = self._single if self._single is not None else self._node(host, int(port))
        assert node is not None
        conn = node.conn
        if conn is None or conn.closed:
            return self._connect_and_send(node, args)
        return conn.send(encode(args), asyncio.get_running_loop())

    async def _connect_and_send(self, node: _Node, args: tuple[Arg, ...]) -> Any:
        conn = await self._connect(node)
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
        if self._refreshing is not None and not self._refreshing.done():
            self._refreshing.cancel()
        lost: list[asyncio.Future[None]] = []
        for node in list(self._nodes.values()):
            if node.connecting is not None and not node.connecting.done():
                node.connecting.cancel()
                with contextlib.suppress(asyncio.CancelledError, RedisConnectionError):
                    await node.connecting
            conn, node.conn = node.conn, None
            if conn is not None:
                conn.fail(RedisConnectionError("client closed"))
                lost.append(conn.lost)
        if lost:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(asyncio.gather(*lost)), CLOSE_WAIT)

    # -- a cluster: routing ----------------------------------------------------------

    async def _routed(self, args: tuple[Arg, ...], key: Arg | None = None) -> Any:
        """One command to the primary serving its key (or *key*), following
        redirections (each says the command did not run) within ``timeout``."""
        loop = asyncio.get_running_loop()
        packed = encode(args)
        if key is None:
            key = command_key(args)
        slot = None if key is None else slot_of(key)
        give_up = time.monotonic() + self.timeout
        asking: _Node | None = None
        last: ResponseError | None = None
        for _ in range(MAX_REDIRECTS + 1):
            node = asking or await self._target(slot)
            conn = node.conn
            if conn is None or conn.closed:
                try:
                    conn = await self._connect(node)
                except NotSent:
                    self._refresh_soon()  # a primary gone: a replica may have taken over
                    raise
            if asking is not None:
                _ignore(conn.send(encode(("ASKING",)), loop))  # applies to the next command
            try:
                return await conn.send(packed, loop)
            except ResponseError as exc:
                redirect = _redirect(str(exc))
                if redirect is None:
                    raise
                last = exc
            kind, moved_slot, address = redirect
            self.redirected[kind] += 1
            asking = None
            if kind == "MOVED" and self._slots is not None:
                self._slots[moved_slot] = self._node_at(address, node)
                self._refresh_soon(at_once=True)
            elif kind == "ASK":
                asking = self._node_at(address, node)
            else:  # TRYAGAIN (keys of a slot half moved), CLUSTERDOWN
                if kind == "CLUSTERDOWN":
                    self._refresh_soon(at_once=True)
                await asyncio.sleep(REDIRECT_BACKOFF)
            if time.monotonic() > give_up:
                break
        raise NotSent(f"Redis Cluster kept redirecting the command: {last}")

    def _node_at(self, address: str, asked: _Node) -> _Node:
        host, _, port = address.rpartition(":")
        return self._node(host or asked.endpoint.host, int(port))

    async def _target(self, slot: int | None) -> _Node:
        """The primary to send to: the one serving *slot*, or any for None."""
        if self._slots is None:
            await self._refresh()
        slots = self._slots
        assert slots is not None
        if slot is None:
            for node in self._nodes.values():  # an open connection first
                if node.conn is not None and not node.conn.closed:
                    return node
            owner = next((n for n in slots if n is not None), None)
        else:
            owner = slots[slot]
        if owner is None:
            raise NotSent(f"no Redis Cluster primary serves slot {slot}")
        return owner

    def _refresh_soon(self, *, at_once: bool = False) -> None:
        """Read the slot map again in the background (at most once a
        :data:`REFRESH_INTERVAL` unless *at_once*)."""
        if self._closed or (self._refreshing is not None and not self._refreshing.done()):
            return
        if not at_once and time.monotonic() - self._refreshed_at < REFRESH_INTERVAL:
            return
        _ignore(self._refresh())

    def _refresh(self) -> asyncio.Future[None]:
        """Read the slot map (``CLUSTER SLOTS``) from the first primary that
        answers; one read shared by every caller."""
        fut = self._refreshing
        if fut is None or fut.done():
            fut = self._refreshing = asyncio.ensure_future(self._read_slots())
        return asyncio.shield(fut)

    async def _read_slots(self) -> None:
        self._refreshed_at = time.monotonic()
        loop = asyncio.get_running_loop()
        known = [n for n in self._nodes.values() if n.conn is not None and not n.conn.closed]
        candidates = [*known, *self._seeds, *self._nodes.values()]
        errors: list[str] = []
        seen: set[str] = set()
        for node in candidates:
            if node.address in seen:
                continue
            seen.add(node.address)
            try:
                conn = node.conn
                if conn is None or conn.closed:
                    conn = await self._connect(node)
                reply = await asyncio.wait_for(
                    conn.send(encode(("CLUSTER", "SLOTS")), loop), self.timeout
                )
            except (RedisConnectionError, ResponseError, TimeoutError) as exc:
                errors.append(f"{node.address}: {exc}")
                continue
            slots: list[_Node | None] = [None] * SLOTS
            for low, high, primary, *_ in reply:
                host = str(primary[0]) if primary[0] not in ("", "?", None) else node.endpoint.host
                owner = self._node(host, int(primary[1]))
                for slot in range(int(low), int(high) + 1):
                    slots[slot] = owner
            self._slots = slots
            self._refreshed_at = time.monotonic()
            return
        raise NotSent("cannot read the Redis Cluster slot map: " + "; ".join(errors))

    # -- connecting ------------------------------------------------------------

    async def _connect(self, node: _Node) -> _Connection:
        fut = node.connecting
        if fut is None:  # one attempt, shared by every caller
            fut = node.connecting = asyncio.ensure_future(self._open(node))
            fut.add_done_callback(lambda done: self._attempt_over(node, done))
        try:
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            reraise_if_cancelling()  # this caller was cancelled: its own business
            # the attempt was cancelled under it, by aclose()
            raise NotSent("client closed") from None

    def _attempt_over(self, node: _Node, fut: asyncio.Future[_Connection]) -> None:
        """A connection attempt is over, whether anyone still waits for it or
        not: the next caller starts a new one (an attempt that failed after all
        its callers gave up must not fail the next caller too), and its error
        is taken."""
        if node.connecting is fut:
            node.connecting = None
        if not fut.cancelled():
            fut.exception()

    async def _open(self, node: _Node) -> _Connection:
        loop = asyncio.get_running_loop()
        where = node.endpoint
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
        node.conn = conn
        # not waited for: the first commands go out with the last estimate
        # (this host's wall clock before any), and are not held up by it
        self._read_clock(conn, loop)
        self._arm_watchdog()
        return conn

    # -- timeouts ----------------------------------------------------------------

    def _arm_watchdog(self) -> None:
        if self._watchdog is None and not self._closed:
            loop = asyncio.get_running_loop()
            self._watchdog = loop.call_later(min(0.25, self.timeout / 4), self._check)

    def _check(self) -> None:
        """A connection whose oldest reply is overdue is hung: fail it, all of it.

        One timer per client instead of one per call keeps timeouts off the
        hot path's cost."""
        self._watchdog = None
        now = time.monotonic()
        live: _Connection | None = None
        for node in self._nodes.values():
            conn = node.conn
            if conn is None or conn.closed:
                continue
            if conn.waiters:
                started, _ = conn.waiters[0]
                if now - started > self.timeout:
                    conn.fail(RedisTimeoutError(f"Redis did not answer within {self.timeout}s"))
                    continue
            live = live or conn
        if live is not None:
            if _monotonic_ms() - self._clock_read_at > CLOCK_SYNC * 1000:
                self._clock_read_at = _monotonic_ms()  # one read in flight at a time
                self._read_clock(live, asyncio.get_running_loop())
            self._arm_watchdog()


def _ignore(fut: Awaitable[Any]) -> None:
    """Let *fut* run on its own; its outcome (an error included) is not wanted."""
    task = asyncio.ensure_future(fut)
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
