"""The Lua scripts, loaded once, with typed wrappers.

Each ``lua/*.lua`` file is one script, called by EVALSHA and loaded again on
NOSCRIPT (a Redis restart or SCRIPT FLUSH): the per-order scripts through the
auto-pipeline (:meth:`Scripts._run`), the admin ones through redis-py's
``Script``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import time
import zlib
from collections.abc import Awaitable
from dataclasses import dataclass
from enum import IntEnum
from importlib import resources
from typing import Any

import msgspec
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from seckill.redis import keys
from seckill.redis.autopipe import NotSent
from seckill.redis.client import RedisClients
from seckill.schemas import MAX_BUCKETS, UNLIMITED, Limits


def lua_source(name: str) -> str:
    """The text of ``lua/<name>.lua``, shipped as the package ``seckill.lua``
    (pyproject maps the top-level ``lua/`` onto it, for a wheel and an
    editable install alike)."""
    return resources.files("seckill.lua").joinpath(f"{name}.lua").read_text()


class Admit(IntEnum):
    """Mirrors the return codes in lua/admit.lua."""

    OK = 0
    SOLD_OUT = 1
    LIMIT_REACHED = 2
    RATE_LIMITED = 3
    NOT_FOUND = 4
    NOT_STARTED = 5
    ENDED = 6
    BAD_QUANTITY = 7
    OVERLOADED = 8
    REPLAY = 9
    #: the script ran past its deadline and did nothing (or, from
    #: :meth:`Scripts.admit`, its answer was lost and Redis's clock then showed
    #: the deadline past with no order: it never admitted, and never will)
    LATE = 10
    #: not from the script: its answer was lost and Redis did not say in time
    #: whether it admitted; ``order_id`` is the order it would have created
    UNKNOWN = 11
    #: the sale has buckets: the script ran on its home hash and did nothing
    #: (only inside :meth:`Scripts.admit`, which then buys in the user's bucket)
    BUCKETED = 12


class Cancel(IntEnum):
    """Mirrors the return codes in lua/cancel.lua."""

    NOT_FOUND = 0
    CANCELLED = 1
    NOT_CANCELLABLE = 2


class Paid(IntEnum):
    """Mirrors the return codes in lua/paid.lua."""

    NOT_FOUND = 0
    PAID = 1
    ALREADY_PAID = 2
    EXPIRED = 3
    NOT_PAYABLE = 4


class Settle(IntEnum):
    """Mirrors the return codes in lua/settle.lua."""

    NOT_FOUND = 0
    SETTLED = 1
    NOT_UNDETERMINED = 2


class SalePut(IntEnum):
    """Mirrors the return codes in lua/sale_put.lua."""

    UPDATED = 0
    CREATED = 1
    MISSING_STOCK = 2
    BAD_WINDOW = 3
    STOCK_CONFLICT = 4
    BUCKETS_IMMUTABLE = 5


@dataclass(frozen=True, slots=True)
class AdmitResult:
    outcome: Admit
    order_id: str = ""
    quantity: int = 0
    status: str = ""
    created_at_ms: int = 0
    #: stock left after an OK; stock left for SOLD_OUT.
    stock_left: int = -1
    retry_after_ms: int = 0


@dataclass(frozen=True, slots=True)
class DeliveryStart:
    """An order's state as a worker finds it (lua/begin.lua)."""

    #: "" when there is no such order (expired, deleted)
    status: str
    #: ms: when its delivery outcome first became unknown, if it did
    unknown_since: int | None
    #: ms: not before this, while it backs off
    retry_at: int | None
    #: tries started before this one (by any process)
    attempts_before: int
    #: True when it is queued and not backing off: a try is due (and counted)
    due: bool
    #: rounds that ended with an unknown outcome so far (defer.lua counts them)
    rounds: int = 0


@dataclass(frozen=True, slots=True)
class SalePutResult:
    outcome: SalePut
    sale: dict[str, str]
    sold: int = 0
    #: BUCKETS_IMMUTABLE: the sale's buckets
    buckets: int = 1


#: the 64 characters that name a bucket in an order id (url-safe)
BUCKET_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
#: the character that marks a bucketed order's token (never a hex digit)
BUCKET_MARK = "Z"
assert len(BUCKET_CHARS) == MAX_BUCKETS


class _OrderIds:
    """``<sale_id>.<8 random url-safe chars><8 hex digits>``: a random prefix per
    process (re-drawn after a fork, and when the counter wraps) and a counter —
    unique without a syscall per buy. Ids carry their sale (its Redis slot).
    An id need not be secret: an order is only shown to its own user.

    An order of bucket *k* of a sale with buckets (issue 13) is
    ``<sale_id>.<8 random><"Z"><BUCKET_CHARS[k]><6 hex digits>``: the 9th
    character of a token is a hex digit in every other order id, so
    :func:`bucket_of_order` tells the two apart; the format and pattern of an
    order id stay as docs/API.md gives them."""

    def __init__(self) -> None:
        self._restart()
        os.register_at_fork(after_in_child=self._restart)

    def _restart(self) -> None:
        self.prefix = secrets.token_urlsafe(6)
        self.count = 0

    def next(self, sale_id: str, bucket: int | None = None) -> str:
        self.count += 1
        if self.count > (0xFFFFFFFF if bucket is None else 0xFFFFFF):
            self._restart()
            self.count = 1
        if bucket is None:
            return f"{sale_id}.{self.prefix}{self.count:08x}"
        return (
            f"{sale_id}.{self.prefix}{BUCKET_MARK}{BUCKET_CHARS[bucket]}{self.count & 0xFFFFFF:06x}"
        )


new_order_id = _OrderIds().next


def bucket_of_order(order_id: str) -> int | None:
    """The bucket an order id names (see :class:`_OrderIds`), or None."""
    token = order_id[-16:]
    if len(order_id) < 18 or token[8] != BUCKET_MARK:
        return None
    k = BUCKET_CHARS.find(token[9])
    return k if k >= 0 else None


def bucket_of_user(user_id: str, buckets: int) -> int:
    """The bucket of a user in a sale of *buckets*: CRC-32 of the id, mod N
    (stable across processes and versions, unlike ``hash()``)."""
    return zlib.crc32(user_id.encode()) % buckets


#: buys sent as one admit.lua call at most (``--admit-batch``; 1 = one call per buy)
ADMIT_BATCH = 64


class _Batch:
    """The buys of one loop turn for one sale: admit.lua's keys and arguments,
    and one future per buy."""

    __slots__ = ("args", "fixed", "keys", "shared", "waiters")

    def __init__(self, fixed: tuple[str, ...], shared: tuple[Any, ...]) -> None:
        self.fixed = fixed
        self.shared = shared
        self.keys: list[str] = []
        self.args: list[Any] = []
        self.waiters: list[asyncio.Future[Any]] = []

    def answer(self, done: asyncio.Future[Any]) -> None:
        """Hand the reply (one array per buy, in order) or the failure out."""
        if done.cancelled():
            exc: BaseException | None = RedisConnectionError("admission batch cancelled")
        else:
            exc = done.exception()
        replies: list[Any] = [] if exc is not None else done.result()
        if exc is None and len(replies) != len(self.waiters):
            exc = ResponseError(f"admit.lua answered {len(replies)} buys of {len(self.waiters)}")
        for i, fut in enumerate(self.waiters):
            if fut.done():
                continue
            if exc is not None:
                fut.set_exception(exc)
            else:
                fut.set_result(replies[i])


#: sales whose fixed keys are kept (sale ids come from the URL: bounded)
MAX_CACHED_SALES = 10_000
#: seconds past an admit's deadline that :meth:`Scripts._settle_admit` waits for
#: Redis to say what became of it (at most ``--redis-timeout``)
SETTLE_WAIT = 1.0
#: seconds between two tries to reach Redis while settling
SETTLE_RETRY = 0.05

log = logging.getLogger("seckill.redis")


def _num(value: float | None) -> str:
    return "" if value is None else repr(float(value))


class Scripts:
    """The scripts, registered with one process's clients.

    The per-order scripts (admit.lua, the hot path; begin, confirm, release,
    park, defer, ack) travel through the auto-pipeline; the admin ones (sale_put,
    cancel, settle) through redis-py's ``Script``. Both reload a script on NOSCRIPT.
    """

    def __init__(self, clients: RedisClients, *, admit_batch: int = ADMIT_BATCH) -> None:
        redis = self._redis = clients.redis
        self._pipe = clients.pipe
        #: buys of one sale (one slot) sent as one admit.lua call at most; 1 = no batching
        self._batch_cap = max(1, admit_batch)
        #: the batches being formed in this loop turn, by sale keys and shared arguments
        self._batches: dict[tuple[Any, ...], _Batch] = {}
        self._admit: AsyncScript = redis.register_script(lua_source("admit"))
        self._sale_put: AsyncScript = redis.register_script(lua_source("sale_put"))
        self._confirm: AsyncScript = redis.register_script(lua_source("confirm"))
        self._release: AsyncScript = redis.register_script(lua_source("release"))
        self._cancel: AsyncScript = redis.register_script(lua_source("cancel"))
        self._outcome = lua_source("admit_outcome")
        self._park: AsyncScript = redis.register_script(lua_source("park"))
        self._defer: AsyncScript = redis.register_script(lua_source("defer"))
        self._begin: AsyncScript = redis.register_script(lua_source("begin"))
        self._ack: AsyncScript = redis.register_script(lua_source("ack"))
        self._settle: AsyncScript = redis.register_script(lua_source("settle"))
        self._paid: AsyncScript = redis.register_script(lua_source("paid"))
        self._expire: AsyncScript = redis.register_script(lua_source("expire"))
        self._keys: dict[str, tuple[str, str, str, str]] = {}
        #: SCRIPT LOADs in flight, by sha
        self._loading: dict[str, asyncio.Future[Any]] = {}
        self._rates_of: Limits | None = None
        self._rate_args = ("", "")
        self._take: AsyncScript = redis.register_script(lua_source("xfer_take"))
        self._credit: AsyncScript = redis.register_script(lua_source("xfer_credit"))
        self._xack: AsyncScript = redis.register_script(lua_source("xfer_ack"))
        self._bucket_put: AsyncScript = redis.register_script(lua_source("bucket_put"))
        #: sale id -> its bucket tags, for sales with buckets > 1 (fixed at creation)
        self._routes: dict[str, tuple[str, ...]] = {}
        #: refills in flight in this process, by (bucket tag, quantity of the buy)
        self._refills: dict[tuple[str, int], asyncio.Future[bool]] = {}

    async def admit(
        self,
        sale_id: str,
        user_id: str,
        quantity: int,
        *,
        idempotency_key: str | None = None,
        idempotency_ttl: int = 86_400,
        limits: Limits = UNLIMITED,
        max_backlog: int = 0,
        now_ms: int | None = None,
        deadline_ms: int | None = None,
    ) -> AdmitResult:
        """Run admit.lua for one buy.

        The script gets a deadline, by Redis's clock, at which this call stops
        waiting (``--redis-timeout`` from now; *deadline_ms* overrides it, for
        tests; with a test clock, *now_ms*, there is none unless given): run
        later, it changes nothing. When the answer is lost after
        the script was sent, the call does not give up but settles
        (:meth:`_settle_admit`) what became of it: admitted, LATE (never will be),
        or UNKNOWN. A script that was never sent raises :class:`NotSent`;
        any other Redis failure raises as before.
        """
        tags = self._routes.get(sale_id)
        if tags is None:
            rate, per_user_rate = self._rates(limits)
            result = await self._admit_at(
                sale_id,
                sale_id,
                new_order_id(sale_id),
                user_id,
                quantity,
                idempotency_key,
                idempotency_ttl,
                (rate, limits.burst, per_user_rate, limits.per_user_burst),
                max_backlog,
                now_ms,
                deadline_ms,
            )
            if result.outcome is not Admit.BUCKETED:
                return result
            tags = self._routes[sale_id]
        return await self._admit_bucketed(
            sale_id,
            tags,
            user_id,
            quantity,
            idempotency_key,
            idempotency_ttl,
            limits,
            max_backlog,
            now_ms,
            deadline_ms,
        )

    async def _admit_at(
        self,
        owner: str,
        sale_id: str,
        order_id: str,
        user_id: str,
        quantity: int,
        idempotency_key: str | None,
        idempotency_ttl: int,
        rates: tuple[str, int, str, int],
        max_backlog: int,
        now_ms: int | None,
        deadline_ms: int | None,
    ) -> AdmitResult:
        """admit.lua on the keys of *owner*: the sale itself, or one of its
        bucket tags (then the order's ``sale_id`` is still *sale_id*)."""
        fixed = self._sale_keys(owner)
        sale_key = fixed[0]
        rate, burst, per_user_rate, per_user_burst = rates
        pipe = self._pipe
        if deadline_ms is None and now_ms is None:
            deadline_ms = int(pipe.redis_now_ms() + pipe.timeout * 1000)
        if idempotency_key is None:
            # the idempotency keys and the user's bucket are only read when used;
            # otherwise any key of the sale's slot stands in, and saves building one
            idem_key = legacy_key = sale_key
        else:
            idem_key = keys.idem(owner, user_id, idempotency_key)
            legacy_key = keys.legacy_idem(owner, user_id, idempotency_key)
        buy_keys = (
            idem_key,
            keys.order(owner, order_id),
            sale_key if per_user_rate == "" else keys.user_bucket(owner, user_id),
            legacy_key,
        )
        buy_args = (
            user_id,
            quantity,
            order_id,
            "" if idempotency_key is None else "1",
            "" if deadline_ms is None else deadline_ms,
        )
        shared = (
            idempotency_ttl,
            "" if now_ms is None else now_ms,
            rate,
            burst,
            per_user_rate,
            per_user_burst,
            max_backlog,
            sale_id,
        )
        try:
            if self._batch_cap > 1:
                reply: list[Any] = await self._batched(fixed, shared, buy_keys, buy_args)
            else:
                reply = (await self._run(self._admit, [*fixed, *buy_keys], [*shared, *buy_args]))[0]
        except NotSent:
            raise
        except (RedisConnectionError, RedisTimeoutError) as exc:
            if deadline_ms is None:  # a test's clock, no deadline: nothing to settle by
                raise
            idem = None if idempotency_key is None else (user_id, idem_key, legacy_key)
            return await self._settle_admit(owner, order_id, deadline_ms, exc, idem)
        outcome = reply[0]
        if outcome == Admit.OK:
            return AdmitResult(Admit.OK, reply[1], quantity, "queued", reply[3], reply[2])
        outcome = Admit(outcome)
        if outcome is Admit.BUCKETED:
            self._route(sale_id, int(reply[1]), _str(reply[2]))
            return AdmitResult(outcome)
        if outcome is Admit.REPLAY:
            return AdmitResult(
                outcome, _str(reply[1]), int(reply[2]), _str(reply[3]), int(reply[4])
            )
        if outcome is Admit.SOLD_OUT:
            return AdmitResult(outcome, stock_left=int(reply[1]))
        if outcome is Admit.RATE_LIMITED:
            return AdmitResult(outcome, retry_after_ms=int(reply[1]))
        return AdmitResult(outcome)

    async def _settle_admit(
        self,
        sale_id: str,
        order_id: str,
        deadline_ms: int,
        lost: Exception,
        idem: tuple[str, str, str] | None = None,
    ) -> AdmitResult:
        """What became of an admit whose answer was lost (*lost*).

        Asks admit_outcome.lua, on a connection opened anew (the pipeline
        replaced the failed one; by EVAL, so that nothing else, such as a
        SCRIPT LOAD on a pooled connection, is needed), whether the order
        exists and whether Redis's clock is past the deadline; before the
        deadline, asks again once it has passed. Admitted: OK with the order as
        it is now; with *idem* (the user id and the two keys of its
        Idempotency-Key), an order the key names for that user answers as a
        replay would (REPLAY). Absent
        past the deadline: LATE — the script ran and refused, or will refuse.
        No answer within ``min(timeout, SETTLE_WAIT)`` of the deadline: UNKNOWN.
        """
        pipe = self._pipe
        order_key = keys.order(sale_id, order_id)
        user, idem_key, legacy_key = idem or ("", order_key, order_key)
        # this host's monotonic clock at the deadline, and when to give up
        until_deadline = max(0.0, (deadline_ms - pipe.redis_now_ms()) / 1000)
        give_up = time.monotonic() + until_deadline + min(pipe.timeout, SETTLE_WAIT)
        while True:
            left = give_up - time.monotonic()
            try:
                if left <= 0:
                    raise TimeoutError
                reply: list[Any] = await asyncio.wait_for(
                    pipe.execute(
                        "EVAL",
                        self._outcome,
                        3,
                        order_key,
                        idem_key,
                        legacy_key,
                        deadline_ms,
                        order_id,
                        user,
                    ),
                    left,
                )
            except NotSent:  # no connection yet: try again while there is time
                await asyncio.sleep(min(SETTLE_RETRY, max(0.0, give_up - time.monotonic())))
                continue
            except (RedisConnectionError, RedisTimeoutError, ResponseError, TimeoutError) as exc:
                log.warning(
                    "buy %s: outcome unknown (%s; then %s)",
                    order_id,
                    lost,
                    str(exc) or "no answer in time",
                )
                return AdmitResult(Admit.UNKNOWN, order_id)
            if int(reply[0]) == 1:
                found = _str(reply[1])
                log.warning("buy %s: admitted as %s, its answer lost (%s)", order_id, found, lost)
                return AdmitResult(
                    Admit.OK if found == order_id else Admit.REPLAY,
                    found,
                    int(reply[2]),
                    _str(reply[3]),
                    int(reply[4]),
                )
            early_ms = -int(reply[1])
            if early_ms < 0:
                return AdmitResult(Admit.LATE, order_id)
            await asyncio.sleep(min(early_ms + 1, max(0.0, left * 1000)) / 1000)

    def _batched(
        self,
        fixed: tuple[str, str, str, str],
        shared: tuple[Any, ...],
        buy_keys: tuple[str, str, str, str],
        buy_args: tuple[Any, ...],
    ) -> asyncio.Future[Any]:
        """admit.lua's reply for one buy, sent with the other buys of this loop
        turn that share its sale keys (its slot) and shared arguments: the
        first buy of a turn opens a batch and schedules its sending for the
        end of the turn; a batch that reaches the cap is sent at once."""
        loop = asyncio.get_running_loop()
        key = (fixed[0], shared)
        batch = self._batches.get(key)
        if batch is None:
            batch = self._batches[key] = _Batch(fixed, shared)
            loop.call_soon(self._send_due, key, batch)
        fut: asyncio.Future[Any] = loop.create_future()
        batch.keys.extend(buy_keys)
        batch.args.extend(buy_args)
        batch.waiters.append(fut)
        if len(batch.waiters) >= self._batch_cap:
            del self._batches[key]
            self._send_batch(batch)
        return fut

    def _send_due(self, key: tuple[Any, ...], batch: _Batch) -> None:
        if self._batches.get(key) is batch:  # not sent already (full)
            del self._batches[key]
            self._send_batch(batch)

    def _send_batch(self, batch: _Batch) -> None:
        """One EVALSHA for the whole batch, written now (not at the next loop
        turn); its reply is handed out buy by buy. A failure fails every buy of
        the batch alike: NOSCRIPT (not run) is answered by loading the script
        and sending the batch again, as for a single call (:meth:`_run`);
        anything else is each buy's to handle (a lost connection: outcome
        unknown, settled buy by buy — never sent again)."""
        key_list = [*batch.fixed, *batch.keys]
        args = [*batch.shared, *batch.args]
        try:
            sent = self._pipe.execute("EVALSHA", self._admit.sha, len(key_list), *key_list, *args)
        except Exception as exc:  # not sent (a callback: nobody else would tell the buys)
            failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            failed.set_exception(NotSent(f"admission batch not sent: {exc}"))
            batch.answer(failed)
            return
        if asyncio.isfuture(sent):
            self._pipe.flush()

            def first(done: asyncio.Future[Any]) -> None:
                exc = None if done.cancelled() else done.exception()
                if isinstance(exc, ResponseError) and str(exc).startswith("NOSCRIPT"):
                    again = asyncio.ensure_future(self._reload_and_run(key_list, args))
                    again.add_done_callback(batch.answer)
                else:
                    batch.answer(done)

            sent.add_done_callback(first)
        else:  # not connected yet, or a cluster: a coroutine (it follows redirections)
            task = asyncio.ensure_future(self._after(sent, key_list, args))
            task.add_done_callback(batch.answer)

    async def _after(self, sent: Awaitable[Any], key_list: list[str], args: list[Any]) -> Any:
        """The reply to admit.lua sent as *sent*; on NOSCRIPT (not run), as :meth:`_run`."""
        try:
            return await sent
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        return await self._reload_and_run(key_list, args)

    async def _reload_and_run(self, key_list: list[str], args: list[Any]) -> Any:
        """admit.lua was answered NOSCRIPT (not run): load it, send it again (:meth:`_run`)."""
        try:
            await self._load(self._admit, key_list[0])
        except (RedisConnectionError, RedisTimeoutError) as exc:
            raise NotSent(f"cannot load a script: {exc}") from exc
        return await self._run(self._admit, key_list, args)

    def _sale_keys(self, sale_id: str) -> tuple[str, str, str, str]:
        """The sale's fixed keys (hash, units, stream, bucket), built once per sale."""
        found = self._keys.get(sale_id)
        if found is None:
            if len(self._keys) >= MAX_CACHED_SALES:  # sale ids are client input
                self._keys.clear()
            found = self._keys[sale_id] = (
                keys.sale(sale_id),
                keys.units(sale_id),
                keys.stream(sale_id),
                keys.bucket(sale_id),
            )
        return found

    def _rates(self, limits: Limits) -> tuple[str, str]:
        """The two rates as admit.lua reads them, kept for the current limits."""
        if limits is not self._rates_of:
            self._rates_of = limits
            self._rate_args = (_num(limits.rate), _num(limits.per_user_rate))
        return self._rate_args

    async def _run(self, script: AsyncScript, key_list: list[str], args: list[Any]) -> Any:
        """EVALSHA through the auto-pipeline; on NOSCRIPT load it and send it
        again (twice at most: in a cluster, a slot being migrated may send it
        on to a primary that lost its scripts too)."""
        command = ("EVALSHA", script.sha, len(key_list), *key_list, *args)
        for _ in range(2 if self._pipe.cluster else 1):
            try:
                return await self._pipe.execute(*command)
            except ResponseError as exc:
                if not str(exc).startswith("NOSCRIPT"):
                    raise
            # Not run (the server lost its scripts, e.g. a restart): load and send again.
            try:
                await self._load(script, key_list[0] if key_list else None)
            except (RedisConnectionError, RedisTimeoutError) as exc:
                raise NotSent(f"cannot load a script: {exc}") from exc
        return await self._pipe.execute(*command)

    async def _eval(self, script: AsyncScript, key_list: list[str], args: list[Any]) -> Any:
        """An admin or transfer script through the pooled client. In a
        cluster, NOSCRIPT (not run) is answered as for the auto-pipeline's
        scripts (:meth:`_load`: loaded on the key's primary, best effort on
        the others) and the script sent again: redis-py's ``Script`` would
        load it on every primary, and fail while any one of them is down."""
        if not self._pipe.cluster:
            return await script(keys=key_list, args=args)
        command = (script.sha, len(key_list), *key_list, *args)
        try:
            return await self._redis.evalsha(*command)  # type: ignore[misc]
        except NoScriptError:
            pass
        await self._load(script, key_list[0])
        return await self._redis.evalsha(*command)  # type: ignore[misc]

    def _loaded(self, loading: asyncio.Future[Any]) -> None:
        """A SCRIPT LOAD is over: forget it, and take its error (every caller
        that waited for it may have been cancelled meanwhile)."""
        self._loading = {k: f for k, f in self._loading.items() if f is not loading}
        if not loading.cancelled():
            loading.exception()

    async def _load(self, script: AsyncScript, key: str | None = None) -> None:
        """SCRIPT LOAD *script*, once for every caller that found it missing:
        a crowd arriving at a restarted Redis would otherwise load it once per
        buy, each on a pooled connection of its own. In a cluster, through the
        auto-pipeline: on the primary serving *key* (it must answer) and on
        every other primary (best effort: one primary down does not keep the
        others from loading)."""
        cluster = self._pipe.cluster and key is not None
        loading = self._loading.get(script.sha)
        if loading is None:
            if cluster:
                assert key is not None
                loading = asyncio.ensure_future(self._load_everywhere(str(script.script), key))
            else:
                loading = asyncio.ensure_future(self._redis.script_load(script.script))
            self._loading[script.sha] = loading
            loading.add_done_callback(self._loaded)
        await asyncio.shield(loading)

    async def _load_everywhere(self, source: str, key: str) -> None:
        pipe = self._pipe
        where = pipe.address_of(key)
        others = [a for a in pipe.primaries() if a != where]
        loads = [pipe.execute_for(key, "SCRIPT", "LOAD", source)]
        loads += [pipe.execute_at(a, "SCRIPT", "LOAD", source) for a in others]
        first, *_ = await asyncio.gather(*loads, return_exceptions=True)
        if isinstance(first, BaseException):
            raise first

    # -- buckets (issue 13; docs/architecture.md, "One hot sale on several shards") --

    def _route(self, sale_id: str, buckets: int, tags: str) -> tuple[str, ...]:
        found = tuple(tags.split())
        if buckets < 2 or len(found) != buckets:
            raise ResponseError(f"sale {sale_id}: bad bucket tags {tags!r}")
        if len(self._routes) >= MAX_CACHED_SALES:
            self._routes.clear()
        self._routes[sale_id] = found
        return found

    async def route(self, sale_id: str) -> tuple[str, ...] | None:
        """The bucket tags of a sale with buckets, None for any other sale id
        (one HMGET the first time; a sale's buckets never change)."""
        found = self._routes.get(sale_id)
        if found is not None:
            return found
        n, tags = await self._redis.hmget(keys.sale(sale_id), ["buckets", "tags"])  # type: ignore[misc]
        if n is None or tags is None:
            return None
        return self._route(sale_id, int(n), _str(tags))

    async def order_owner(self, order_id: str) -> str | None:
        """Whose keys hold an order: its sale id, or its bucket's tag; None
        for a malformed id."""
        sale_id = keys.sale_of_order(order_id)
        if sale_id is None:
            return None
        k = bucket_of_order(order_id)
        if k is None:
            return sale_id
        tags = await self.route(sale_id)
        if tags is None or k >= len(tags):
            return sale_id
        return tags[k]

    async def user_owner(self, sale_id: str, user_id: str) -> str:
        """Whose keys hold a user's units and Idempotency-Keys in a sale."""
        tags = await self.route(sale_id)
        return sale_id if tags is None else tags[bucket_of_user(user_id, len(tags))]

    async def _admit_bucketed(
        self,
        sale_id: str,
        tags: tuple[str, ...],
        user_id: str,
        quantity: int,
        idempotency_key: str | None,
        idempotency_ttl: int,
        limits: Limits,
        max_backlog: int,
        now_ms: int | None,
        deadline_ms: int | None,
    ) -> AdmitResult:
        """A buy in the user's bucket; when the bucket has too little, stock
        is moved to it (:meth:`_find_stock`) and the buy tried again, so it is
        refused SOLD_OUT only when the sale as a whole has too little."""
        n = len(tags)
        k = bucket_of_user(user_id, n)
        tag = tags[k]
        rates = (
            _num(None if limits.rate is None else limits.rate / n),
            max(1, -(-limits.burst // n)),
            _num(limits.per_user_rate),
            limits.per_user_burst,
        )
        repaired = False
        for _ in range(MAX_REFILL_ROUNDS):
            result = await self._admit_at(
                tag,
                sale_id,
                new_order_id(sale_id, k),
                user_id,
                quantity,
                idempotency_key,
                idempotency_ttl,
                rates,
                max_backlog,
                now_ms,
                deadline_ms,
            )
            if result.outcome is Admit.NOT_FOUND and not repaired:
                # the bucket's hash is not there yet (a creation half done): make it
                repaired = True
                await self.propagate(sale_id)
                continue
            if result.outcome is Admit.OK:
                # the bucket's stock is not the sale's: never "the last unit"
                return AdmitResult(
                    Admit.OK, result.order_id, quantity, "queued", result.created_at_ms, -1
                )
            if result.outcome is not Admit.SOLD_OUT:
                return result
            if not await self._shared_find_stock(sale_id, tags, k, quantity):
                return result  # proven: the sale holds fewer than quantity units
        log.warning("sale %s: no stock found for a buy in %d rounds", sale_id, MAX_REFILL_ROUNDS)
        return AdmitResult(Admit.OVERLOADED)

    async def _shared_find_stock(
        self, sale_id: str, tags: tuple[str, ...], k: int, quantity: int
    ) -> bool:
        """:meth:`_find_stock`, once for every buy of this process that ran out
        in the same bucket for the same quantity."""
        key = (tags[k], quantity)
        running = self._refills.get(key)
        if running is None:
            running = asyncio.ensure_future(self._find_stock(sale_id, tags, k, quantity))
            self._refills[key] = running

            def done(f: asyncio.Future[bool], key: tuple[str, int] = key) -> None:
                if self._refills.get(key) is f:
                    del self._refills[key]
                if not f.cancelled():
                    f.exception()

            running.add_done_callback(done)
        return await asyncio.shield(running)

    async def _find_stock(self, sale_id: str, tags: tuple[str, ...], k: int, quantity: int) -> bool:
        """Move stock to bucket *k* for a buy of *quantity*; True when bucket
        *k* got some (or holds *quantity* by now): buy again. False when it is
        proven that the sale holds fewer than *quantity* units.

        Each round takes from the pool (at least *quantity*, or pool / (2N)
        if more, at most what there is). The pool is empty: finish every
        outstanding transfer, drain every other bucket into the pool, and go
        again. The proof (docs/architecture.md, "Why it never answers a false
        sold_out"): a **quiet** round — the pool's take found 0 units and
        nothing outstanding at sequence number s; then every other bucket had
        0 units, bucket *k* fewer than *quantity*, and no bucket a transfer
        outstanding — followed by a take that again finds 0 units, nothing
        outstanding, at s. No unit entered or left the pool in between, so
        none entered any bucket: at that last take the sale held fewer than
        *quantity* units.
        """
        home, n = sale_id, len(tags)
        quiet_seq: int | None = None
        for _ in range(MAX_REFILL_ROUNDS):
            amount, seq, outstanding, _ = await self.transfer(home, tags[k], quantity, spread=2 * n)
            if amount > 0:
                return True
            if quiet_seq is not None and seq == quiet_seq and outstanding == 0:
                return False
            quiet = outstanding == 0
            if not quiet:
                await self.reconcile_owner(home)
            for j, tag in enumerate(tags):
                # the other buckets give all they have; bucket k keeps its own
                # (need 0: nothing is taken, its stock and transfers are read)
                moved, _, out_j, left = await self.transfer(tag, home, 0 if j == k else -1)
                if j == k and left >= quantity:
                    return True  # refilled meanwhile (another process): buy again
                if moved > 0 or out_j > 0:
                    quiet = False
                if out_j > 0:
                    await self.reconcile_owner(tag)
            quiet_seq = seq if quiet else None
        return False

    async def transfer(
        self, source: str, dest: str, need: int, *, spread: int = 0, xid: str | None = None
    ) -> tuple[int, int, int, int]:
        """Move stock from *source* to *dest* (a sale id = its pool, or a
        bucket tag): xfer_take, xfer_credit, xfer_ack, each atomic on one slot
        and a no-op when run again with the same transfer id. Returns (units
        moved, the source's xfer_seq, transfers outstanding at the source
        before, units left at the source). A crash between the steps leaves
        the transfer outstanding for :meth:`reconcile_owner` to finish."""
        xid = xid or secrets.token_urlsafe(12)
        amount, seq, outstanding, _, left = await self._take_step(source, dest, need, spread, xid)
        if amount > 0:
            await self.finish(source, dest, xid, amount)
        return amount, seq, outstanding, left

    async def take(
        self, source: str, dest: str, need: int, *, spread: int = 0, xid: str
    ) -> tuple[int, int, int, int]:
        """Step 1 only (xfer_take.lua): ``(amount, seq, outstanding, state)``."""
        return (await self._take_step(source, dest, need, spread, xid))[:4]

    async def _take_step(
        self, source: str, dest: str, need: int, spread: int, xid: str
    ) -> tuple[int, int, int, int, int]:
        reply: list[Any] = await self._eval(
            self._take,
            [keys.sale(source), keys.xfer_out(source), keys.xfer_done(source)],
            [xid, _field(source), need, spread, dest, ""],
        )
        amount, seq, outstanding, state, left = (int(x) for x in reply)
        return amount, seq, outstanding, state, left

    async def finish(self, source: str, dest: str, xid: str, amount: int) -> None:
        """Steps 2 and 3: credit *dest* (once), then acknowledge at *source*."""
        await self._eval(
            self._credit, [keys.sale(dest), keys.xfer_in(dest)], [xid, _field(dest), amount, ""]
        )
        await self._eval(self._xack, [keys.xfer_out(source), keys.xfer_done(source)], [xid, ""])

    async def reconcile_owner(self, owner: str, *, min_age_ms: int = 0) -> int:
        """Finish the transfers outstanding at *owner* (older than
        *min_age_ms*); returns how many."""
        pending: dict[Any, Any] = await self._redis.hgetall(keys.xfer_out(owner))  # type: ignore[misc]
        now = time.time_ns() // 1_000_000
        done = 0
        failed: list[RedisError | OSError] = []
        for xid, record in pending.items():
            dest, amount, at = _str(record).split(" ")
            if now - int(at) < min_age_ms:
                continue
            try:  # a destination on a dead primary: the others still
                await self.finish(owner, dest, _str(xid), int(amount))
            except (RedisError, OSError) as exc:
                failed.append(exc)
                continue
            done += 1
        if failed:
            raise failed[0]
        return done

    async def reconcile(self, sale_id: str, *, min_age_ms: int = 0) -> int:
        """Bring a sale with buckets to rest: its buckets have the sale's
        current settings, and every interrupted transfer is finished. Returns
        the transfers finished (0 for a sale without buckets)."""
        tags = await self.route(sale_id)
        if tags is None:
            return 0
        # an owner on a dead primary does not hold up the others: each step
        # goes on past a failing one, and the first failure is raised at the end
        failed: list[RedisError | OSError] = []
        try:
            await self.propagate(sale_id)
        except (RedisError, OSError) as exc:
            failed.append(exc)
        done = 0
        for owner in (sale_id, *tags):
            try:
                done += await self.reconcile_owner(owner, min_age_ms=min_age_ms)
            except (RedisError, OSError) as exc:
                failed.append(exc)
        if done:
            log.warning("sale %s: %d interrupted stock transfer(s) finished", sale_id, done)
        if failed:
            raise failed[0]
        return done

    async def propagate(self, sale_id: str) -> None:
        """Copy the sale's settings (window, per-user limit) to its buckets,
        creating those that are missing (bucket_put.lua; by version, so an
        older copy never overwrites a newer one)."""
        tags = await self.route(sale_id)
        if tags is None:
            return
        fields = ["cfg_v", "starts_at", "ends_at", "per_user_limit", "pay_window_s"]
        row = await self._redis.hmget(keys.sale(sale_id), fields)  # type: ignore[misc]
        cfg = ["" if x is None else _str(x) for x in row]
        failed: list[RedisError | OSError] = []
        for k, tag in enumerate(tags):  # a bucket on a dead primary: the others still
            try:
                await self._eval(self._bucket_put, [keys.sale(tag)], [sale_id, k, *cfg])
            except (RedisError, OSError) as exc:
                failed.append(exc)
        if failed:
            raise failed[0]

    async def choose_tags(self, sale_id: str, buckets: int) -> list[str]:
        """Bucket tags for a new sale: on a cluster, each on a slot of its own
        on a primary after the home's, round the primaries (so N buckets on P
        primaries use min(N, P) of them); on one server, ``S/0`` … ``S/N-1``."""
        from redis.crc import key_slot

        cluster: Any = self._redis
        nodes = getattr(cluster, "nodes_manager", None)
        if nodes is None:
            return [keys.bucket_tag(sale_id, k) for k in range(buckets)]
        if not nodes.slots_cache:
            await cluster.initialize()

        def owner(slot: int) -> str:
            return str(nodes.get_node_from_slot(slot).name)

        primaries = sorted({owner(slot) for slot in range(0, 16384, 1)})
        used = {key_slot(sale_id.encode())}
        start = primaries.index(owner(key_slot(sale_id.encode()))) + 1
        tags = []
        for k in range(buckets):
            target = primaries[(start + k) % len(primaries)]
            for salt in range(100_000):
                tag = keys.bucket_tag(sale_id, k, salt)
                slot = key_slot(tag.encode())
                if slot not in used and owner(slot) == target:
                    break
            used.add(slot)
            tags.append(tag)
        return tags

    async def read_sale(self, sale_id: str) -> dict[str, str] | None:
        """The sale hash as the views read it (None: no such sale). For a sale
        with buckets: the home hash with stock_left = pool + the buckets' stock
        + units in flight between them, and the buckets' order counters summed."""
        return (await self.read_sales([sale_id])).get(sale_id)

    async def read_sales(self, sale_ids: list[str]) -> dict[str, dict[str, str]]:
        """:meth:`read_sale` of many sales: one pipelined HGETALL each, and one
        more round for the buckets of those that have them."""
        if not sale_ids:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for sale_id in sale_ids:
                pipe.hgetall(keys.sale(sale_id))
            rows: list[dict[Any, Any]] = await pipe.execute()
        found: dict[str, dict[str, str]] = {}
        bucketed: list[tuple[str, tuple[str, ...]]] = []
        for sale_id, row in zip(sale_ids, rows, strict=True):
            if not row:
                continue
            sale = {_str(k): _str(v) for k, v in row.items()}
            found[sale_id] = sale
            if "buckets" in sale:
                bucketed.append((sale_id, self._route(sale_id, int(sale["buckets"]), sale["tags"])))
        for sale_id, tags in bucketed:
            state = await self.stock_state(sale_id, tags)
            sale = found[sale_id]
            sale["stock_left"] = str(state.available)
            for name in COUNTERS:
                sale[name] = str(sum(b.get(name, 0) for b in state.buckets))
        return found

    async def stock_state(self, sale_id: str, tags: tuple[str, ...]) -> StockState:
        """Where a bucketed sale's stock is: pool, buckets, transfers in flight
        (taken, not yet credited), and each bucket's counters and units held."""
        owners = [sale_id, *tags]
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.sale(sale_id), "pool")
            for tag in tags:
                pipe.hmget(keys.sale(tag), ["stock_left", *COUNTERS])
            for owner in owners:
                pipe.hgetall(keys.xfer_out(owner))
            rows: list[Any] = await pipe.execute()
        pool = int(rows[0] or 0)
        buckets = []
        for row in rows[1 : 1 + len(tags)]:
            buckets.append(
                {name: int(v or 0) for name, v in zip(["stock_left", *COUNTERS], row, strict=True)}
            )
        outstanding: list[tuple[str, str, int]] = []
        for row in rows[1 + len(tags) :]:
            for xid, record in row.items():
                dest, amount, _ = _str(record).split(" ")
                outstanding.append((_str(xid), dest, int(amount)))
        in_flight = 0
        if outstanding:
            async with self._redis.pipeline(transaction=False) as pipe:
                for xid, dest, _ in outstanding:
                    pipe.zscore(keys.xfer_in(dest), xid)
                credited = await pipe.execute()
            in_flight = sum(
                amount
                for (_, _, amount), score in zip(outstanding, credited, strict=True)
                if score is None
            )
        return StockState(pool, buckets, in_flight, len(outstanding))

    async def sale_put(
        self, sale_id: str, fields: dict[str, Any], *, now_ms: int | None = None
    ) -> SalePutResult:
        """Create or update a sale (sale_put.lua). With ``buckets`` > 1 at
        creation the buckets get their tags (:meth:`choose_tags`), their hashes
        and a first share of the stock; an update of such a sale is copied to
        its buckets, and a stock cut that the pool cannot cover first drains
        the buckets into the pool."""
        tags = ""
        buckets = int(fields.get("buckets", 1))
        if buckets > 1 and not await self._redis.exists(keys.sale(sale_id)):
            chosen = await self.choose_tags(sale_id, buckets)
            # indexed before the sale exists: the order readers of every
            # process read the buckets' streams before a buy can reach one
            await self._redis.sadd(keys.SALES_INDEX, *chosen)
            tags = " ".join(chosen)
        result = await self._sale_put_once(sale_id, fields, now_ms, tags)
        if result.outcome is SalePut.STOCK_CONFLICT and await self.route(sale_id):
            await self.drain(sale_id)
            result = await self._sale_put_once(sale_id, fields, now_ms, tags)
        if result.outcome not in (SalePut.CREATED, SalePut.UPDATED):
            return result
        route = await self.route(sale_id)
        if route is None:
            return result
        await self.propagate(sale_id)
        if result.outcome is SalePut.CREATED:
            share = int(result.sale.get("pool", 0)) // (2 * len(route))
            for tag in route:
                if share > 0:
                    await self.transfer(sale_id, tag, share)
        sale = await self.read_sale(sale_id)
        return SalePutResult(result.outcome, sale or result.sale)

    async def drain(self, sale_id: str) -> None:
        """Every bucket's stock back to the pool (and interrupted transfers finished)."""
        tags = await self.route(sale_id)
        await self.reconcile(sale_id)
        for tag in tags or ():
            await self.transfer(tag, sale_id, -1)

    async def _sale_put_once(
        self, sale_id: str, fields: dict[str, Any], now_ms: int | None, tags: str
    ) -> SalePutResult:
        reply: list[Any] = await self._eval(
            self._sale_put,
            [keys.sale(sale_id)],
            [msgspec.json.encode(fields), "" if now_ms is None else now_ms, sale_id, tags],
        )
        outcome = SalePut(int(reply[0]))
        if outcome is SalePut.STOCK_CONFLICT:
            return SalePutResult(outcome, {}, sold=int(reply[1]))
        if outcome is SalePut.BUCKETS_IMMUTABLE:
            return SalePutResult(outcome, {}, buckets=int(reply[1]))
        flat = [_str(x) for x in reply[1:]]
        return SalePutResult(outcome, dict(zip(flat[::2], flat[1::2], strict=True)))

    async def confirm(
        self,
        sale_id: str,
        order_id: str,
        group: str,
        entry_id: str,
        *,
        now_ms: int | None = None,
        retention: int = 0,
    ) -> bool:
        """queued -> confirmed, then XACK + XDEL. True when the status changed.
        *retention*: seconds the final order hash is kept (0 = forever)."""
        changed = await self._run(
            self._confirm,
            [
                keys.order(sale_id, order_id),
                keys.sale(sale_id),
                keys.stream(sale_id),
                keys.pay_deadlines(sale_id),
            ],
            [group, entry_id, "" if now_ms is None else now_ms, retention],
        )
        return bool(int(changed))

    async def release(
        self, sale_id: str, order_id: str, group: str, entry_id: str, *, retention: int = 0
    ) -> bool:
        """queued -> failed with its units back, then XACK + XDEL. True when the
        status changed. Only for a definite "not written"."""
        changed = await self._run(
            self._release,
            [
                keys.order(sale_id, order_id),
                keys.sale(sale_id),
                keys.units(sale_id),
                keys.stream(sale_id),
            ],
            [group, entry_id, retention],
        )
        return bool(int(changed))

    async def park(
        self, sale_id: str, order_id: str, group: str, entry_id: str, *, now_ms: int | None = None
    ) -> bool:
        """queued -> undetermined (stock still held), then XACK + XDEL. True
        when the status changed."""
        changed = await self._run(
            self._park,
            [
                keys.order(sale_id, order_id),
                keys.sale(sale_id),
                keys.stream(sale_id),
                keys.undetermined(sale_id),
            ],
            [group, entry_id, "" if now_ms is None else now_ms, order_id],
        )
        return bool(int(changed))

    async def begin(self, sale_id: str, order_id: str, *, now_ms: int) -> DeliveryStart:
        """The order's state before a delivery; counts the try when it is due."""
        reply: list[Any] = await self._run(self._begin, [keys.order(sale_id, order_id)], [now_ms])
        status, since, retry_at = (_str(x) for x in reply[:3])
        return DeliveryStart(
            status=status,
            unknown_since=int(since) if since else None,
            retry_at=int(retry_at) if retry_at else None,
            attempts_before=int(reply[3]),
            due=bool(int(reply[4])),
            rounds=int(reply[5]),
        )

    async def defer(
        self, sale_id: str, order_id: str, *, now_ms: int, retry_at_ms: int
    ) -> tuple[int, int] | None:
        """Note an unknown round on a queued order: ``(unknown_since_ms, rounds)``,
        or None when the order is not queued any more."""
        reply: list[Any] = await self._run(
            self._defer, [keys.order(sale_id, order_id)], [now_ms, retry_at_ms]
        )
        if not reply:
            return None
        return int(reply[0]), int(reply[1])

    async def ack(self, sale_id: str, group: str, entry_id: str) -> None:
        """XACK + XDEL an entry that needs nothing more."""
        await self._run(self._ack, [keys.stream(sale_id)], [group, entry_id])

    async def cancel(
        self, sale_id: str, order_id: str, *, retention: int = 0
    ) -> tuple[Cancel, dict[str, str]]:
        """queued|confirmed -> cancelled with its units back; the order hash after."""
        reply: list[Any] = await self._eval(
            self._cancel,
            [
                keys.order(sale_id, order_id),
                keys.sale(sale_id),
                keys.units(sale_id),
                keys.pay_deadlines(sale_id),
                keys.stream(sale_id),
            ],
            [retention, order_id],
        )
        flat = [_str(x) for x in reply[1:]]
        return Cancel(int(reply[0])), dict(zip(flat[::2], flat[1::2], strict=True))

    async def settle(
        self,
        sale_id: str,
        order_id: str,
        outcome: str,
        *,
        retention: int = 0,
        now_ms: int | None = None,
    ) -> tuple[Settle, dict[str, str]]:
        """undetermined -> confirmed (*outcome* "confirm") or failed with its
        units back ("release"); the order hash after."""
        if outcome not in ("confirm", "release"):
            raise ValueError(f"outcome must be 'confirm' or 'release', got {outcome!r}")
        reply: list[Any] = await self._eval(
            self._settle,
            [
                keys.order(sale_id, order_id),
                keys.sale(sale_id),
                keys.units(sale_id),
                keys.undetermined(sale_id),
                keys.pay_deadlines(sale_id),
            ],
            [outcome, "" if now_ms is None else now_ms, retention, order_id],
        )
        flat = [_str(x) for x in reply[1:]]
        return Settle(int(reply[0])), dict(zip(flat[::2], flat[1::2], strict=True))

    async def paid(
        self, sale_id: str, order_id: str, *, retention: int = 0, now_ms: int | None = None
    ) -> tuple[Paid, dict[str, str]]:
        """confirmed -> paid (lua/paid.lua; *sale_id* is the order's owner: its
        sale, or its bucket's tag); the order hash after."""
        reply: list[Any] = await self._eval(
            self._paid,
            [
                keys.order(sale_id, order_id),
                keys.sale(sale_id),
                keys.pay_deadlines(sale_id),
                keys.stream(sale_id),
            ],
            ["" if now_ms is None else now_ms, retention, order_id],
        )
        flat = [_str(x) for x in reply[1:]]
        return Paid(int(reply[0])), dict(zip(flat[::2], flat[1::2], strict=True))

    async def expire(
        self, sale_id: str, order_id: str, *, retention: int = 0, now_ms: int | None = None
    ) -> bool:
        """confirmed -> expired past its pay deadline, its units back
        (lua/expire.lua). True when the status changed."""
        changed = await self._eval(
            self._expire,
            [
                keys.order(sale_id, order_id),
                keys.sale(sale_id),
                keys.units(sale_id),
                keys.pay_deadlines(sale_id),
                keys.stream(sale_id),
            ],
            [order_id, "" if now_ms is None else now_ms, retention],
        )
        return bool(int(changed))

    async def due(self, sale_id: str, now_ms: int, limit: int = 500) -> list[str]:
        """Order ids of *sale_id* (a sale or a bucket tag) whose pay deadline is
        at or before *now_ms*, oldest first."""
        ids: list[Any] = await self._redis.zrangebyscore(
            keys.pay_deadlines(sale_id), "-inf", now_ms, start=0, num=limit
        )
        return [_str(x) for x in ids]


#: seconds between two passes of the reconciler of every gateway process
RECONCILE_INTERVAL = 5.0
#: ms a transfer stays outstanding before the periodic reconciler finishes it
#: (the buy that started it normally finishes it within milliseconds)
RECONCILE_MIN_AGE_MS = 2000


async def reconcile_forever(redis: Any, scripts: Scripts) -> None:
    """Every RECONCILE_INTERVAL: :meth:`Scripts.reconcile` every sale with
    buckets (those whose tags are in the sale index). Idempotent: any number
    of processes may run it at once."""
    while True:
        await asyncio.sleep(RECONCILE_INTERVAL)
        try:
            members: set[str] = await redis.smembers(keys.SALES_INDEX)
        except (RedisError, OSError) as exc:
            log.warning("reconciler: %s; next pass in %.0f s", exc, RECONCILE_INTERVAL)
            continue
        for sale_id in sorted({keys.sale_of_tag(m) for m in members if keys.is_bucket_tag(m)}):
            try:  # one sale (or one of its primaries) down does not hold up the others
                await scripts.reconcile(sale_id, min_age_ms=RECONCILE_MIN_AGE_MS)
            except (RedisError, OSError) as exc:
                log.warning(
                    "reconciler: sale %s: %s; next pass in %.0f s", sale_id, exc, RECONCILE_INTERVAL
                )


#: the order counters of a sale (and of each of its buckets)
COUNTERS = (
    "n_queued",
    "n_confirmed",
    "n_failed",
    "n_cancelled",
    "n_undetermined",
    "n_paid",
    "n_expired",
)
#: rounds of "buy, find stock" one buy goes through at most
MAX_REFILL_ROUNDS = 1000


@dataclass(frozen=True, slots=True)
class StockState:
    """Where a sale with buckets holds its stock (:meth:`Scripts.stock_state`)."""

    pool: int
    #: per bucket: stock_left and the counters
    buckets: list[dict[str, int]]
    #: units taken from a source and not yet credited to their destination
    in_flight: int
    #: transfers outstanding (taken, not acknowledged)
    outstanding: int

    @property
    def available(self) -> int:
        return self.pool + sum(b["stock_left"] for b in self.buckets) + self.in_flight


def _field(owner: str) -> str:
    """The stock field of a transfer's source or destination: a bucket's
    stock_left, or the home hash's pool."""
    return "stock_left" if keys.is_bucket_tag(owner) else "pool"


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
