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
from dataclasses import dataclass
from enum import IntEnum
from importlib import resources
from typing import Any

import msgspec
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from seckill.redis import keys
from seckill.redis.autopipe import NotSent
from seckill.redis.client import RedisClients
from seckill.schemas import UNLIMITED, Limits


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


class Cancel(IntEnum):
    """Mirrors the return codes in lua/cancel.lua."""

    NOT_FOUND = 0
    CANCELLED = 1
    NOT_CANCELLABLE = 2


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


class _OrderIds:
    """``<sale_id>.<8 random url-safe chars><8 hex digits>``: a random prefix per
    process (re-drawn after a fork, and when the counter wraps) and a counter —
    unique without a syscall per buy. Ids carry their sale (its Redis slot).
    An id need not be secret: an order is only shown to its own user."""

    def __init__(self) -> None:
        self._restart()
        os.register_at_fork(after_in_child=self._restart)

    def _restart(self) -> None:
        self.prefix = secrets.token_urlsafe(6)
        self.count = 0

    def next(self, sale_id: str) -> str:
        self.count += 1
        if self.count > 0xFFFFFFFF:
            self._restart()
            self.count = 1
        return f"{sale_id}.{self.prefix}{self.count:08x}"


new_order_id = _OrderIds().next


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

    def __init__(self, clients: RedisClients) -> None:
        redis = self._redis = clients.redis
        self._pipe = clients.pipe
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
        self._keys: dict[str, tuple[str, str, str, str]] = {}
        #: SCRIPT LOADs in flight, by sha
        self._loading: dict[str, asyncio.Future[Any]] = {}
        self._rates_of: Limits | None = None
        self._rate_args = ("", "")

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
        order_id = new_order_id(sale_id)
        sale_key, units_key, stream_key, bucket_key = self._sale_keys(sale_id)
        rate, per_user_rate = self._rates(limits)
        pipe = self._pipe
        if deadline_ms is None and now_ms is None:
            deadline_ms = int(pipe.redis_now_ms() + pipe.timeout * 1000)
        if idempotency_key is None:
            # KEYS[3], KEYS[7] and KEYS[8] are only read when used; otherwise any key
            # of the sale's slot stands in, and saves building one
            idem_key = legacy_key = sale_key
        else:
            idem_key = keys.idem(sale_id, user_id, idempotency_key)
            legacy_key = keys.legacy_idem(sale_id, user_id, idempotency_key)
        try:
            reply: list[Any] = await self._run(
                self._admit,
                [
                    sale_key,
                    units_key,
                    idem_key,
                    keys.order(sale_id, order_id),
                    stream_key,
                    bucket_key,
                    sale_key if per_user_rate == "" else keys.user_bucket(sale_id, user_id),
                    legacy_key,
                ],
                [
                    user_id,
                    quantity,
                    order_id,
                    "" if idempotency_key is None else "1",
                    idempotency_ttl,
                    "" if now_ms is None else now_ms,
                    rate,
                    limits.burst,
                    per_user_rate,
                    limits.per_user_burst,
                    max_backlog,
                    sale_id,
                    "" if deadline_ms is None else deadline_ms,
                ],
            )
        except NotSent:
            raise
        except (RedisConnectionError, RedisTimeoutError) as exc:
            if deadline_ms is None:  # a test's clock, no deadline: nothing to settle by
                raise
            idem = None if idempotency_key is None else (user_id, idem_key, legacy_key)
            return await self._settle_admit(sale_id, order_id, deadline_ms, exc, idem)
        outcome = reply[0]
        if outcome == Admit.OK:
            return AdmitResult(Admit.OK, reply[1], quantity, "queued", reply[3], reply[2])
        outcome = Admit(outcome)
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

    async def sale_put(
        self, sale_id: str, fields: dict[str, Any], *, now_ms: int | None = None
    ) -> SalePutResult:
        reply: list[Any] = await self._sale_put(
            keys=[keys.sale(sale_id)],
            args=[msgspec.json.encode(fields), "" if now_ms is None else now_ms, sale_id],
        )
        outcome = SalePut(int(reply[0]))
        if outcome is SalePut.STOCK_CONFLICT:
            return SalePutResult(outcome, {}, sold=int(reply[1]))
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
            [keys.order(sale_id, order_id), keys.sale(sale_id), keys.stream(sale_id)],
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
        reply: list[Any] = await self._cancel(
            keys=[keys.order(sale_id, order_id), keys.sale(sale_id), keys.units(sale_id)],
            args=[retention],
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
        reply: list[Any] = await self._settle(
            keys=[
                keys.order(sale_id, order_id),
                keys.sale(sale_id),
                keys.units(sale_id),
                keys.undetermined(sale_id),
            ],
            args=[outcome, "" if now_ms is None else now_ms, retention, order_id],
        )
        flat = [_str(x) for x in reply[1:]]
        return Settle(int(reply[0])), dict(zip(flat[::2], flat[1::2], strict=True))


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
