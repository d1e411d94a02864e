"""The order pipeline: Redis Stream → bounded queue → worker pool → sink.

Per gateway process:

- the **reader** reads every sale's stream through the consumer group
  ``GROUP`` under this process's consumer name, and puts entries into a
  bounded ``asyncio.Queue``; when the queue is full it stops reading, so a
  burst waits in the stream, never in RAM. At start it first re-reads the
  entries still pending on its own name (a restart re-delivers them at once).
  Two ways to read (``PipelineOptions.per_stream``):

  - *one multi-stream read* (single node, the default there): one blocking
    XREADGROUP names every sale's stream — one connection and one command
    however many sales, woken by the first entry of any;
  - *one blocking read per stream* (Redis Cluster, where a multi-key
    XREADGROUP across slots is refused with CROSSSLOT and every sale's stream
    ``seckill:{sale}:orders`` is its own slot): a read loop per sale, each a
    single-key XREADGROUP that redis-py routes to the stream's node. A
    blocking read holds its connection for up to ``block_ms``, so at most
    ``blocking_reads`` of them run at once in a process (a FIFO semaphore);
    with more sales than that the loops take turns: while another loop waits
    for a turn, a read blocks only ``ROTATE_BLOCK_MS``. Connections held by
    reads stay at ``blocking_reads`` whatever the number of sales, and an
    idle stream is read again within about ``sales / blocking_reads ×
    ROTATE_BLOCK_MS``; a stream with entries is read back to back;
- ``workers`` tasks take entries and deliver them to the sink (timeout per
  try, exponential backoff with jitter, a retry budget); success runs
  confirm.lua (begin.lua first reads the order and counts the try, so that
  whoever holds the entry later knows a try may have gone out). A failure is
  *definite* (the order was certainly not written)
  or *unknown* (it may have been: a timeout after sending, a 5xx…; see
  ``SinkError``). Stock goes back (release.lua) only when every try failed
  definitely — or at once on a refusal — and a sink that can look
  (``CheckableSink``: SQLite, PostgreSQL) does not hold the row (if it does:
  confirm). An unknown outcome never releases: defer.lua notes it in the order
  hash (``unknown_since``, ``retry_at``, ``rounds``) and the entry stays
  pending in the stream, held by nothing in this process; the reclaimer takes
  it up again once idle, and a round is tried once per pass after a capped
  exponential backoff. Past ``undetermined_after`` seconds of doubt, park.lua
  makes it ``undetermined`` (stock still held, listed in the sale's
  ``undetermined`` sorted set) for an operator to settle (settle.lua). Every
  script that ends an order acknowledges its entry and deletes it (XDEL), and
  gives the final order hash its retention TTL;
- the **keeper** re-claims this process's held entries to itself every few
  seconds (XCLAIM … JUSTID), so an entry that waits in a slow queue never
  looks idle to other processes;
- **status events** (issue 15: ``paid``, ``expired``, the cancel of a
  confirmed order) share the stream with the orders: an entry with a
  ``status`` field goes to the sink's ``set_status`` (retried like a
  delivery; a failure leaves it pending for the reclaimer), then is
  acknowledged;
- the **sweeper** (``sweep``, every ``SWEEP_INTERVAL``) expires the orders of
  a sale with a pay window past their deadline (expire.lua), each sale (each
  bucket tag) under its own lock, and publishes ``sale_changed``; the
  **reconciler** (``seckill.pipeline.reconcile``) checks every sale's books
  every 30 s;
- the **reclaimer** takes over entries idle longer than ``IDLE_TIMEOUT_MS`` —
  those of a dead process — with XAUTOCLAIM, every ``RECLAIM_INTERVAL``; per
  stream, under a redis-py ``Lock`` of that stream (``reclaim_lock``: the
  sale's hash tag, so on the stream's node) so one process at a time claims a
  stream's idle entries while others may claim other streams — and a lost
  node stops only the reclaiming of its own streams. A dead process's entries
  are idle at most ``KEEP_INTERVAL`` when it dies, claimable
  ``IDLE_TIMEOUT_MS`` later, and taken by the next pass of a living process:
  within ``IDLE_TIMEOUT_MS + RECLAIM_INTERVAL`` (20 s; the lock of a process
  that died holding it expires after ``2 × RECLAIM_INTERVAL``, sooner), given
  room in that process's queue.

Shutdown: stop reading, let in-flight deliveries finish within a deadline,
leave the rest pending in the stream (delivered after restart; sinks are
idempotent, so nothing is written twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, TypeVar

from redis.exceptions import LockError, RedisError, ResponseError

from seckill import metrics
from seckill.aiotools import cancel_and_wait, reraise_if_cancelling
from seckill.pipeline.reconcile import reconcile_forever
from seckill.pipeline.sinks import (
    FINAL_STATUSES,
    CheckableSink,
    Order,
    Sink,
    SinkError,
    StatusSink,
    one_line,
)
from seckill.redis import keys
from seckill.redis.client import RedisClients
from seckill.redis.scripts import Scripts

log = logging.getLogger("seckill.pipeline")

GROUP = "seckill"
#: an entry pending this long (ms) on one consumer is taken over by another.
IDLE_TIMEOUT_MS = 15_000
#: seconds between reclaimer passes and keeper refreshes.
RECLAIM_INTERVAL = 5.0
KEEP_INTERVAL = 4.0
#: seconds between looks at the sale index for new sales.
DISCOVER_INTERVAL = 1.0
#: blocking stream reads at once per process in per-stream mode (the default
#: of ``PipelineOptions.blocking_reads``), and the block (ms) of a read while
#: another stream waits for its turn
MAX_BLOCKING_READS = 16
ROTATE_BLOCK_MS = 50
BACKOFF_BASE, BACKOFF_CAP = 0.1, 10.0
#: seconds between rounds of an order whose delivery outcome is unknown
ROUND_BACKOFF_BASE, ROUND_BACKOFF_CAP = 1.0, 300.0
#: the pipeline's own bound on one delivery is the delivery timeout plus this,
#: so that the sink's timeout (which knows what a failure proves) fires first
TIMEOUT_GRACE = 1.0
#: seconds to wait for in-flight deliveries at shutdown.
DRAIN_DEADLINE = 10.0
#: seconds between two passes of the pay-window sweeper (issue 15): an unpaid
#: order expires within this (plus a pass's work) after its deadline
SWEEP_INTERVAL = 0.5
#: seconds a sweeper holds one sale's (or bucket's) lock at most
SWEEP_LOCK_TIMEOUT = 10.0

T = TypeVar("T")


class Delivery(Enum):
    """How a round of deliveries of one order ended."""

    DELIVERED = "delivered"
    #: delivered, and the sink's answer settled it as paid (issue 15)
    PAID = "paid"
    #: the sink refused it for good (a permanent SinkError): retrying cannot help
    REFUSED = "refused"
    #: every try failed, each definitely without writing
    NOT_WRITTEN = "not_written"
    #: a try may have written it (a timeout after sending, a 5xx…)
    UNKNOWN = "unknown"
    #: shutting down between tries
    STOPPING = "stopping"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def round_backoff(rounds: int) -> float:
    """Seconds before round *rounds* + 1 of an order whose outcome is unknown:
    exponential, capped (the reclaimer's idle time comes on top)."""
    return float(min(ROUND_BACKOFF_CAP, ROUND_BACKOFF_BASE * 2 ** min(rounds, 30)))


@dataclass(frozen=True, slots=True)
class Entry:
    sale_id: str
    entry_id: str
    #: the order as its stream entry carries it (admit.lua writes every field)
    order: Order
    #: a status event (paid, expired, cancelled: issue 15) rather than an
    #: order to deliver; "" for an order
    status: str = ""
    #: ms: when the status was reached (0 when the entry does not say)
    at_ms: int = 0


def backoff(attempt: int) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^attempt)]."""
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt))


@dataclass(frozen=True, slots=True)
class PipelineOptions:
    """One process's pipeline knobs (``Settings.pipeline_options()`` fills
    them from ``--order-workers``, ``--queue-size``, ``--delivery-timeout``,
    ``--delivery-retries`` and ``--redis-timeout``)."""

    workers: int
    queue_size: int
    delivery_timeout: float
    delivery_retries: int
    redis_timeout: float
    #: seconds an order's delivery outcome may stay unknown before it is parked
    undetermined_after: float = 3600.0
    #: seconds a final order hash is kept (0 = forever)
    order_retention: int = 7 * 86_400
    #: one blocking read per stream (True), one multi-stream read (False), or
    #: per stream exactly in cluster mode (None)
    per_stream: bool | None = None
    #: per-stream mode: blocking reads (each a held connection) at once
    blocking_reads: int = MAX_BLOCKING_READS


def reclaim_lock(sale_id: str) -> str:
    """The reclaimer's lock of one sale's stream (its hash tag: the stream's slot)."""
    return f"{keys.PREFIX}:{{{sale_id}}}:reclaimer"


class Pipeline:
    def __init__(
        self,
        clients: RedisClients,
        scripts: Scripts,
        sink: Sink,
        options: PipelineOptions,
        consumer: str,
        on_released: Callable[[str], Awaitable[None]],
    ) -> None:
        #: blocking reads, claims and the lock go through redis-py; per-order
        #: commands through the auto-pipeline
        self.redis, self.pipe = clients.redis, clients.pipe
        self.scripts, self.sink = scripts, sink
        self.consumer = consumer
        self.workers = options.workers
        self.retries = options.delivery_retries
        self.delivery_timeout = options.delivery_timeout
        self.undetermined_after_ms = int(options.undetermined_after * 1000)
        self.retention = options.order_retention
        # a blocking read must end well before the socket timeout
        self.block_ms = max(10, min(1000, int(options.redis_timeout * 500)))
        self.queue: asyncio.Queue[Entry] = asyncio.Queue(options.queue_size)
        per_stream = options.per_stream
        if per_stream is None:
            per_stream = clients.cluster
        self.per_stream = per_stream
        self.blocking_reads = max(1, options.blocking_reads)
        self._read_turns = asyncio.Semaphore(self.blocking_reads)
        #: per-stream read loops waiting for a turn
        self._waiting_turns = 0
        #: per-stream mode: the read loop of each sale
        self._readers: dict[str, asyncio.Task[None]] = {}
        self.on_released = on_released
        self.sales: set[str] = set()
        #: entries read by this process and not yet acknowledged, per sale
        self.held: dict[str, set[str]] = {}
        self.stopping = False
        self._stopped = asyncio.Event()
        #: worker tasks that are handling an entry right now
        self._delivering: set[asyncio.Task[Any]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._workers: list[asyncio.Task[None]] = []

    @property
    def running(self) -> bool:
        return (
            bool(self._workers)
            and not self.stopping
            and all(
                not t.done() for t in self._tasks + self._workers + list(self._readers.values())
            )
        )

    async def start(self) -> None:
        await self.sink.start()
        if self.per_stream:
            log.info(
                "order reader: one blocking read per stream, at most %d at once",
                self.blocking_reads,
            )
        else:
            log.info("order reader: one blocking read of every stream")
        self._tasks = [
            asyncio.create_task(self._read_loop(), name="pipeline-reader"),
            asyncio.create_task(self._keep_loop(), name="pipeline-keeper"),
            asyncio.create_task(self._reclaim_loop(), name="pipeline-reclaimer"),
            asyncio.create_task(self._sweep_loop(), name="pipeline-sweeper"),
            asyncio.create_task(
                reconcile_forever(self.redis, self.scripts, self.sink),
                name="pipeline-reconciler",
            ),
        ]
        self._workers = [
            asyncio.create_task(self._work_loop(), name=f"pipeline-worker-{i}")
            for i in range(self.workers)
        ]
        metrics.WORKERS.inc(self.workers)
        metrics.add_sampler(self._sample_gauges)

    async def stop(self, deadline: float = DRAIN_DEADLINE) -> None:
        """Stop intake, let in-flight deliveries finish within *deadline* seconds."""
        self.stopping = True
        self._stopped.set()
        if not await cancel_and_wait(self._tasks + list(self._readers.values()), deadline):
            log.warning("a pipeline task did not stop in %.0fs; left behind", deadline)
        # idle workers wait on the queue: cancel them; busy ones finish their order
        for task in self._workers:
            if task not in self._delivering:
                task.cancel()
        _, late = await asyncio.wait(self._workers, timeout=deadline)
        if late:
            log.warning(
                "%d deliveries did not finish in %.0fs; their orders stay pending",
                len(late),
                deadline,
            )
            if not await cancel_and_wait(list(late), deadline):
                log.warning("a delivery worker did not stop in %.0fs; left behind", deadline)
        await asyncio.gather(*(t for t in self._workers if t.done()), return_exceptions=True)
        metrics.remove_sampler(self._sample_gauges)
        metrics.WORKERS.dec(self.workers)
        metrics.QUEUE_DEPTH.set(0)
        metrics.WORKERS_BUSY.set(0)
        left = self.queue.qsize()
        if left:
            log.info("%d order(s) left pending in the stream for after the restart", left)
        await self.sink.close()

    def _sample_gauges(self) -> None:
        """The live gauges, set at every metrics flush rather than per order."""
        metrics.QUEUE_DEPTH.set(self.queue.qsize())
        metrics.WORKERS_BUSY.set(len(self._delivering))

    # -- reading ---------------------------------------------------------------

    async def _discover(self) -> list[str]:
        """New sales in the index; their consumer groups exist afterwards. A
        sale whose group cannot be made now (its node is down, in a cluster)
        is left for a later look, without holding up the others."""
        found: set[str] = await self.redis.smembers(keys.SALES_INDEX)  # type: ignore[misc, assignment]
        new = []
        for sale_id in sorted(found - self.sales):
            try:
                await self.redis.xgroup_create(keys.stream(sale_id), GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):  # BUSYGROUP: it exists already
                    log.warning("sale %s: cannot read it yet (%s)", sale_id, one_line(exc))
                    continue
            except (RedisError, OSError) as exc:
                reraise_if_cancelling()
                log.warning("sale %s: cannot read it yet (%s)", sale_id, one_line(exc))
                continue
            self.held.setdefault(sale_id, set())
            self.sales.add(sale_id)
            new.append(sale_id)
        return new

    async def _read_own_pending(self, sale_id: str) -> None:
        """Re-deliver what this consumer name read before a restart."""
        last = "0"
        while not self.stopping:
            reply: Any = await self.redis.xreadgroup(
                GROUP, self.consumer, {keys.stream(sale_id): last}, count=100
            )
            entries = reply[0][1] if reply else []
            if not entries:
                return
            for entry_id, fields in entries:
                await self._enqueue(sale_id, entry_id, fields)
                last = entry_id

    async def _enqueue(self, sale_id: str, entry_id: str, fields: dict[str, str] | None) -> bool:
        """Queue an entry (waits while the queue is full); False when it was
        not queued: malformed (acknowledged), or held here already."""
        try:
            order = Order(
                order_id=fields["order_id"],  # type: ignore[index]
                sale_id=keys.sale_of_tag(sale_id),  # a bucket's stream: its sale's id
                user_id=fields["user_id"],  # type: ignore[index]
                quantity=int(fields["quantity"]),  # type: ignore[index]
                created_at_ms=int(fields["created_at"]),  # type: ignore[index]
            )
            status = fields.get("status", "")  # type: ignore[union-attr]
            if status and status not in FINAL_STATUSES:
                raise ValueError(status)
            at_ms = int(fields.get("at") or 0)  # type: ignore[union-attr]
        except (TypeError, KeyError, ValueError):  # deleted or foreign entry: just ack it
            log.warning("skipping malformed stream entry %s of sale %s", entry_id, sale_id)
            await self.scripts.ack(sale_id, GROUP, entry_id)
            return False
        held = self.held.setdefault(sale_id, set())
        if entry_id in held:
            return False
        held.add(entry_id)
        await self.queue.put(Entry(sale_id, entry_id, order, status, at_ms))
        return True

    async def _read_loop(self) -> None:
        """Discover sales; read them all in one command (or start a read loop
        per sale in per-stream mode)."""
        next_discovery = 0.0
        while not self.stopping:
            try:
                if time.monotonic() >= next_discovery:
                    for sale_id in await self._discover():
                        if self.per_stream:  # the sale's loop reads its own pending first
                            self._readers[sale_id] = asyncio.create_task(
                                self._stream_loop(sale_id), name=f"pipeline-reader-{sale_id}"
                            )
                        else:
                            await self._read_own_pending(sale_id)
                    next_discovery = time.monotonic() + DISCOVER_INTERVAL
                if self.per_stream or not self.sales:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopped.wait(), DISCOVER_INTERVAL)
                    continue
                reply: Any = await self.redis.xreadgroup(
                    GROUP,
                    self.consumer,
                    {keys.stream(s): ">" for s in sorted(self.sales)},
                    count=self._count(),
                    block=self.block_ms,
                )
                for stream, entries in reply or []:
                    sale_id = _sale_of_stream(stream)
                    for entry_id, fields in entries:
                        if self.stopping:  # what is not queued is re-read after a restart
                            return
                        await self._enqueue(sale_id, entry_id, fields)  # waits when full
            except (RedisError, OSError) as exc:
                reraise_if_cancelling()
                if self.stopping:
                    return
                log.warning("order reader: Redis error (%s); retrying", one_line(exc))
                await asyncio.sleep(1.0)

    def _count(self) -> int:
        """Entries to ask for: what the queue has room for, within 1..500."""
        return max(1, min(self.queue.maxsize - self.queue.qsize(), 500))

    @contextlib.asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        """One of the ``blocking_reads`` turns of per-stream reading."""
        self._waiting_turns += 1
        try:
            await self._read_turns.acquire()
        finally:
            self._waiting_turns -= 1
        try:
            yield
        finally:
            self._read_turns.release()

    async def _stream_loop(self, sale_id: str) -> None:
        """Per-stream mode: read one sale's stream, a blocking read at a time
        within the process's ``blocking_reads`` turns."""
        stream = keys.stream(sale_id)
        own_pending_read = False
        while not self.stopping:
            try:
                if not own_pending_read:
                    async with self._turn():  # a burst of new sales: a few at a time
                        await self._read_own_pending(sale_id)
                    own_pending_read = True
                async with self._turn():
                    # others waiting for a turn: a short block, then theirs
                    block = ROTATE_BLOCK_MS if self._waiting_turns else self.block_ms
                    reply: Any = await self.redis.xreadgroup(
                        GROUP, self.consumer, {stream: ">"}, count=self._count(), block=block
                    )
                for _, entries in reply or []:
                    for entry_id, fields in entries:
                        if self.stopping:
                            return
                        await self._enqueue(sale_id, entry_id, fields)  # waits when full
            except (RedisError, OSError) as exc:
                reraise_if_cancelling()
                if self.stopping:
                    return
                log.warning(
                    "order reader of sale %s: Redis error (%s); retrying", sale_id, one_line(exc)
                )
                await asyncio.sleep(1.0)

    # -- keeping and reclaiming -------------------------------------------------------

    async def _keep_loop(self) -> None:
        while not self.stopping:
            await asyncio.sleep(KEEP_INTERVAL)
            for sale_id, ids in list(self.held.items()):
                if not ids:
                    continue
                try:
                    await self.redis.xclaim(
                        keys.stream(sale_id), GROUP, self.consumer, 0, list(ids), justid=True
                    )
                except (RedisError, OSError) as exc:
                    reraise_if_cancelling()
                    log.warning("order keeper: Redis error (%s)", one_line(exc))

    async def _reclaim_loop(self) -> None:
        while not self.stopping:
            await asyncio.sleep(RECLAIM_INTERVAL)
            try:
                await self.reclaim()
            except (RedisError, OSError) as exc:
                reraise_if_cancelling()
                log.warning("order reclaimer: Redis error (%s)", one_line(exc))

    async def reclaim(self, idle_ms: int | None = None) -> int:
        """One pass: take over entries idle for *idle_ms* (default
        ``IDLE_TIMEOUT_MS``), stream by stream, each under its own lock."""
        if idle_ms is None:
            idle_ms = IDLE_TIMEOUT_MS
        taken = 0
        sales = list(self.sales)
        random.shuffle(sales)  # processes that meet at one stream's lock part at the next
        for sale_id in sales:
            if self.stopping or self.queue.maxsize - self.queue.qsize() <= 0:
                break
            try:
                taken += await self._reclaim_stream(sale_id, idle_ms)
            except (RedisError, OSError) as exc:  # that stream's node: the others go on
                reraise_if_cancelling()
                log.warning("order reclaimer, sale %s: Redis error (%s)", sale_id, one_line(exc))
        if taken:
            log.info(
                "took over %d idle pending order(s): a stopped consumer's, or due for a retry",
                taken,
            )
        return taken

    async def _reclaim_stream(self, sale_id: str, idle_ms: int) -> int:
        lock = self.redis.lock(reclaim_lock(sale_id), timeout=RECLAIM_INTERVAL * 2, blocking=False)
        if not await lock.acquire():
            return 0
        taken = 0
        try:
            start = "0-0"
            while not self.stopping:
                free = self.queue.maxsize - self.queue.qsize()
                if free <= 0:
                    break
                claimed: Any = await self.redis.xautoclaim(
                    keys.stream(sale_id), GROUP, self.consumer, idle_ms, start, count=free
                )
                start, entries = claimed[0], claimed[1]
                for entry_id, fields in entries:
                    # an entry held here already (idle 0 claims those too) is no takeover
                    taken += await self._enqueue(sale_id, entry_id, fields)
                if start in ("0-0", b"0-0"):
                    break
                await lock.reacquire()  # extend while held
        finally:
            with contextlib.suppress(LockError, RedisError, OSError):
                await lock.release()
        return taken

    # -- the pay window (issue 15) ----------------------------------------------------

    async def _sweep_loop(self) -> None:
        while not self.stopping:
            await asyncio.sleep(SWEEP_INTERVAL)
            try:
                await self.sweep()
            except (RedisError, OSError) as exc:
                reraise_if_cancelling()
                log.warning("pay-window sweeper: Redis error (%s)", one_line(exc))
            except Exception:  # a bug must not stop the sweeper (nor the readiness)
                log.exception("pay-window sweeper: unexpected error; next pass goes on")

    async def sweep(self, now: int | None = None) -> int:
        """One pass: expire the orders past their pay deadline, sale by sale
        (a bucket tag on its own: its own slot), each under its own lock so
        one process at a time sweeps it. Returns the orders expired."""
        expired = 0
        sales = list(self.sales)
        random.shuffle(sales)
        for owner in sales:
            if self.stopping:
                break
            try:
                expired += await self._sweep_sale(owner, now_ms() if now is None else now)
            except (RedisError, OSError) as exc:  # that sale's node: the others go on
                reraise_if_cancelling()
                log.warning("pay-window sweeper, sale %s: Redis error (%s)", owner, one_line(exc))
        return expired

    async def _sweep_sale(self, owner: str, now: int) -> int:
        # a look without the lock first: most passes find nothing due
        if not await self.scripts.due(owner, now, 1):
            return 0
        lock = self.redis.lock(keys.sweeper_lock(owner), timeout=SWEEP_LOCK_TIMEOUT, blocking=False)
        if not await lock.acquire():
            return 0
        expired = 0
        try:
            while not self.stopping:
                due = await self.scripts.due(owner, now)
                if not due:
                    break
                done = 0
                for order_id in due:
                    # by Redis's clock (this host's may run ahead): not due, left
                    done += await self.scripts.expire(owner, order_id, retention=self.retention)
                expired += done
                if done == 0:
                    break
                await lock.reacquire()
        finally:
            with contextlib.suppress(LockError, RedisError, OSError):
                await lock.release()
        if expired:
            metrics.ORDERS_EXPIRED.inc(expired)
            log.info("%d unpaid order(s) of %s expired; their stock returned", expired, owner)
            await self.on_released(keys.sale_of_tag(owner))
        return expired

    async def _handle_status(self, entry: Entry) -> None:
        """Tell the sink an order's final status (paid, expired, cancelled),
        then acknowledge the event. A sink that cannot hear it (none of the
        built-in ones) only gets it acknowledged; a failure leaves the event
        pending for the reclaimer (retried, idempotent)."""
        sink = self.sink
        if isinstance(sink, StatusSink):
            order = entry.order
            for attempt in range(self.retries + 1):
                try:
                    async with asyncio.timeout(self.delivery_timeout + TIMEOUT_GRACE):
                        await sink.set_status(order, entry.status, entry.at_ms)
                    break
                except (SinkError, TimeoutError) as exc:
                    if isinstance(exc, SinkError) and exc.permanent:
                        # refused for good (a webhook 4xx): retrying cannot help
                        log.warning(
                            "order %s: the sink refused its status %s: %s; not sent again",
                            order.order_id,
                            entry.status,
                            one_line(exc),
                        )
                        break
                    log.info(
                        "order %s: status %s not recorded by the sink (try %d): %s",
                        order.order_id,
                        entry.status,
                        attempt + 1,
                        one_line(exc),
                    )
                if attempt == self.retries:
                    return  # pending: the reclaimer takes it up again
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), backoff(attempt))
                if self.stopping:
                    return
        await self._ack(entry)

    # -- delivering -------------------------------------------------------------------

    async def _work_loop(self) -> None:
        while not self.stopping:
            entry = await self.queue.get()
            if self.stopping:  # shutting down: leave it pending in the stream
                self.queue.put_nowait(entry)
                return
            me = asyncio.current_task()
            assert me is not None
            self._delivering.add(me)
            try:
                await self._handle(entry)
            except Exception:
                log.exception(
                    "order %s: unexpected error; left for the reclaimer", entry.order.order_id
                )
            finally:
                self._delivering.discard(me)
                self.held.get(entry.sale_id, set()).discard(entry.entry_id)

    async def _handle(self, entry: Entry) -> None:
        """Deliver one order and settle it in Redis (see the module docstring:
        definite failures release, unknown ones defer and finally park)."""
        if entry.status:
            await self._handle_status(entry)
            return
        order = entry.order
        start = await self._redis_retry(
            lambda: self.scripts.begin(entry.sale_id, order.order_id, now_ms=now_ms())
        )
        if start.status != "queued":  # cancelled, or done by a process that died
            await self._ack(entry)
            return
        if not start.due:
            return  # backing off: left pending for a later reclaimer pass
        unknown_since = start.unknown_since
        # A try that an earlier holder started (a process that died or stopped
        # mid-round) may have reached the sink: its outcome is unknown too.
        tried_before = unknown_since is not None or start.attempts_before > 0
        # A first round tries the whole budget; a later one (the outcome is
        # already unknown) tries once per pass.
        delivery = await self._deliver(order, self.retries + 1 if unknown_since is None else 1)
        if delivery is Delivery.STOPPING:
            return
        if delivery in (Delivery.DELIVERED, Delivery.PAID):
            await self._confirm(entry)
            if delivery is Delivery.PAID:  # the webhook answered {"paid": true}
                await self._redis_retry(
                    lambda: self.scripts.paid(
                        entry.sale_id, order.order_id, retention=self.retention
                    )
                )
            return
        maybe_written = tried_before or delivery is Delivery.UNKNOWN
        if not maybe_written:
            # Every try failed definitely: nothing was written, unless a sink
            # that can look says otherwise (an earlier holder's write).
            found = await self._written(order)
            if found:
                await self._confirm(entry)
            elif found is False or not isinstance(self.sink, CheckableSink):
                await self._release(entry, delivery)
            else:  # the lookup failed: not proven, keep the stock
                await self._defer(entry, 0, start.rounds)
            return
        since = unknown_since if unknown_since is not None else now_ms()
        if delivery is Delivery.REFUSED or now_ms() - since >= self.undetermined_after_ms:
            if await self._written(order):
                await self._confirm(entry)
            else:
                await self._park(entry, since, refused=delivery is Delivery.REFUSED)
            return
        await self._defer(entry, since, start.rounds)

    async def _written(self, order: Order) -> bool | None:
        """Whether a sink that can look holds *order*; None when it cannot tell."""
        if not isinstance(self.sink, CheckableSink):
            return None
        try:
            async with asyncio.timeout(self.delivery_timeout + TIMEOUT_GRACE):
                return await self.sink.contains(order.order_id)
        except (SinkError, TimeoutError) as exc:
            log.info("order %s: cannot tell if the sink has it: %s", order.order_id, one_line(exc))
            return None

    async def _ack(self, entry: Entry) -> None:
        await self._redis_retry(lambda: self.scripts.ack(entry.sale_id, GROUP, entry.entry_id))

    async def _confirm(self, entry: Entry) -> None:
        await self._redis_retry(
            lambda: self.scripts.confirm(
                entry.sale_id,
                entry.order.order_id,
                GROUP,
                entry.entry_id,
                retention=self.retention,
            )
        )

    async def _release(self, entry: Entry, delivery: Delivery) -> None:
        order = entry.order
        released = await self._redis_retry(
            lambda: self.scripts.release(
                entry.sale_id, order.order_id, GROUP, entry.entry_id, retention=self.retention
            )
        )
        if released:
            metrics.DELIVERIES_FAILED.inc()
            log.warning(
                "order %s not written (%s); stock returned",
                order.order_id,
                "refused by the sink"
                if delivery is Delivery.REFUSED
                else f"{self.retries + 1} tries failed",
            )
            await self._redis_retry(lambda: self.on_released(keys.sale_of_tag(entry.sale_id)))

    async def _defer(self, entry: Entry, since: int, rounds: int) -> None:
        """Leave the entry pending, not before a backoff (from *rounds*, the
        unknown rounds before this one): a later reclaimer pass (or a restart)
        takes it up again; nothing of it stays in this process."""
        now = now_ms()
        since = since or now
        delay_ms = int(round_backoff(rounds) * 1000)
        # never past the budget: the order is parked on time
        retry_at = min(now + delay_ms, since + self.undetermined_after_ms)
        noted = await self._redis_retry(
            lambda: self.scripts.defer(
                entry.sale_id, entry.order.order_id, now_ms=since, retry_at_ms=retry_at
            )
        )
        if noted is None:  # cancelled meanwhile
            await self._ack(entry)
            return
        log.info(
            "order %s: delivery outcome unknown (round %d); stock held, retried from %s ms",
            entry.order.order_id,
            noted[1],
            retry_at,
        )

    async def _park(self, entry: Entry, since: int, *, refused: bool) -> None:
        order = entry.order
        parked = await self._redis_retry(
            lambda: self.scripts.park(entry.sale_id, order.order_id, GROUP, entry.entry_id)
        )
        if parked:
            metrics.ORDERS_UNDETERMINED.inc()
            log.warning(
                "order %s undetermined: %s; its %d unit(s) stay held until an operator settles"
                " it (seckill order settle %s --confirm|--release)",
                order.order_id,
                "refused by the sink after a try with an unknown outcome"
                if refused
                else f"delivery outcome unknown for {(now_ms() - since) / 1000:.0f}s",
                order.quantity,
                order.order_id,
            )

    async def _command(self, *args: str) -> Any:
        """A plain command, through the auto-pipeline."""
        return await self.pipe.execute(*args)

    async def _deliver(self, order: Order, tries: int) -> Delivery:
        """Up to *tries* deliveries with backoff. DELIVERED; REFUSED at the first
        permanent refusal; else NOT_WRITTEN when every failure was definite,
        UNKNOWN when one may have written; STOPPING when shutting down between
        tries (the entry stays pending for after the restart)."""
        maybe_written = False
        for attempt in range(tries):
            started = time.perf_counter()
            try:
                # asyncio.timeout, not wait_for: no task of its own per delivery.
                # The sink keeps the delivery timeout itself and says what a
                # failure proves; this guard, a little later, is for a sink
                # that does not (its outcome is unknown).
                async with asyncio.timeout(self.delivery_timeout + TIMEOUT_GRACE):
                    paid = await self.sink.deliver(order)
                metrics.count_delivery(started)
                return Delivery.PAID if paid else Delivery.DELIVERED
            except (SinkError, TimeoutError) as exc:
                metrics.DELIVERIES_ATTEMPT_FAILED.inc()
                definite = isinstance(exc, SinkError) and exc.definite
                log.info(
                    "order %s: delivery %d failed (%s): %s",
                    order.order_id,
                    attempt + 1,
                    "not written" if definite else "outcome unknown",
                    one_line(exc),
                )
                if isinstance(exc, SinkError) and exc.permanent:
                    return Delivery.REFUSED
                maybe_written = maybe_written or not definite
            if attempt < tries - 1:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), backoff(attempt))
                if self.stopping:
                    return Delivery.STOPPING
        return Delivery.UNKNOWN if maybe_written else Delivery.NOT_WRITTEN

    async def _redis_retry(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run a Redis call until it succeeds: a delivered order must get confirmed."""
        attempt = 0
        while True:
            try:
                return await call()
            except (RedisError, OSError) as exc:
                reraise_if_cancelling()
                if self.stopping:
                    raise
                log.warning("pipeline: Redis error (%s); retrying", one_line(exc))
                await asyncio.sleep(backoff(attempt) + 0.05)
                attempt += 1


def _sale_of_stream(stream: str) -> str:
    # seckill:{S}:orders
    return stream[len(keys.PREFIX) + 2 : -len("}:orders")]
