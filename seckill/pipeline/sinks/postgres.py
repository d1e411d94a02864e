"""PostgreSQL sink: an asyncpg pool, ``INSERT … ON CONFLICT (order_id) DO NOTHING``.

Each delivery is one autocommitted INSERT on a pooled connection: the pool
(``pool_size`` connections) is what lets concurrent workers write at once.

What a failure proves (:class:`SinkError`): an error the server answered
(the statement failed, autocommit rolled it back) or a connection refused
wrote nothing (definite); a constraint or a value the column cannot take is
a refusal (permanent); a timeout or a lost connection may have written it
(unknown). :meth:`PostgresSink.contains` looks the row up.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import asyncpg

from seckill.pipeline.sinks import COLUMNS, LEGACY_COLUMNS, Order, SinkError, one_line, safe_url

CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS orders (
    order_id     text PRIMARY KEY,
    sale_id      text NOT NULL,
    user_id      text NOT NULL,
    quantity     integer NOT NULL,
    created_at   timestamptz NOT NULL,
    confirmed_at timestamptz NOT NULL,
    status       text NOT NULL DEFAULT 'confirmed'
)
"""
#: a table made before issue 15 gains its status column (every row confirmed)
MIGRATE = "ALTER TABLE orders ADD COLUMN IF NOT EXISTS status text NOT NULL DEFAULT 'confirmed'"
#: idempotent: a final status is set once and the same one again changes nothing
UPDATE_STATUS = "UPDATE orders SET status = $1 WHERE order_id = $2"
SELECT_STATUSES = "SELECT order_id, status FROM orders WHERE order_id = ANY($1::text[])"

# Two processes running CREATE TABLE IF NOT EXISTS at the same moment can
# both miss the table and one fails on a catalog unique index; gateways start
# together (--processes N), so they take turns under this advisory lock.
SCHEMA_LOCK = 5_348_192_001  # any fixed bigint, for this table only

TABLE_COLUMNS = """
SELECT attname FROM pg_attribute
WHERE attrelid = 'orders'::regclass AND attnum > 0 AND NOT attisdropped
ORDER BY attnum
"""

INSERT = """
INSERT INTO orders (order_id, sale_id, user_id, quantity, created_at, confirmed_at)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (order_id) DO NOTHING
"""

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

SELECT_ONE = "SELECT 1 FROM orders WHERE order_id = $1"

# What a failed statement raises: server errors, client-side/pool errors
# (connection lost, pool closing, a value that does not fit its column),
# socket errors.
_FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, ValueError, OverflowError)
#: the statement was refused for what it holds: retrying cannot help
_REFUSALS = (
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.DataError,
    ValueError,
    OverflowError,
)

_NOT_WRITTEN = (asyncpg.PostgresError, ConnectionRefusedError, *_REFUSALS)


def _definite(exc: BaseException) -> bool:
    """True when *exc* proves the INSERT did not write: the server answered
    with an error (autocommit rolled it back), or no connection was made."""
    return isinstance(exc, _NOT_WRITTEN)


class PostgresSink:
    def __init__(self, dsn: str, *, timeout: float = 5.0, pool_size: int = 10) -> None:
        self.dsn = dsn
        #: the DSN as messages show it: no password, no query string.
        self.shown = safe_url(urlsplit(dsn))
        self._timeout = timeout
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None

    def __repr__(self) -> str:
        return f"PostgresSink({self.shown!r})"

    async def start(self) -> None:
        if self._pool is not None:
            return
        try:
            pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self._pool_size,
                timeout=self._timeout,  # connecting
                command_timeout=self._timeout,
            )
        except Exception as exc:  # refused, DNS, auth, no such database, bad DSN…
            raise SinkError(f"cannot reach PostgreSQL at {self.shown}: {one_line(exc)}") from exc
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
                await conn.execute(CREATE_TABLE)
                columns = tuple(r["attname"] for r in await conn.fetch(TABLE_COLUMNS))
                if columns == LEGACY_COLUMNS:
                    await conn.execute(MIGRATE)
                    columns = tuple(r["attname"] for r in await conn.fetch(TABLE_COLUMNS))
        except Exception as exc:
            await _close_pool(pool, self._timeout)
            raise SinkError(
                f"cannot use PostgreSQL at {self.shown}: creating table orders: {one_line(exc)}"
            ) from exc
        if columns != COLUMNS:
            await _close_pool(pool, self._timeout)
            raise SinkError(
                f"PostgreSQL at {self.shown}: table orders has columns {', '.join(columns)};"
                f" expected {', '.join(COLUMNS)}"
            )
        self._pool = pool

    async def deliver(self, order: Order) -> None:
        pool = self._pool
        if pool is None:
            raise SinkError(f"PostgreSQL sink {self.shown} is not running", definite=True)
        try:
            created_at = EPOCH + timedelta(milliseconds=order.created_at_ms)
        except (OverflowError, TypeError) as exc:
            raise SinkError(
                f"order {order.order_id}: created_at_ms={order.created_at_ms!r} is not a time",
                permanent=True,
            ) from exc
        args = (order.order_id, order.sale_id, order.user_id, order.quantity, created_at)
        try:
            # One deadline for waiting on a pooled connection and the INSERT.
            async with asyncio.timeout(self._timeout):
                await pool.execute(INSERT, *args, datetime.now(UTC))
        except TimeoutError:
            raise SinkError(
                f"PostgreSQL at {self.shown}: order {order.order_id} not written"
                f" within {self._timeout:g}s"
            ) from None
        except _FAILURES as exc:
            raise SinkError(
                f"PostgreSQL at {self.shown}: order {order.order_id}: {one_line(exc)}",
                definite=_definite(exc),
                permanent=isinstance(exc, _REFUSALS),
            ) from exc

    async def contains(self, order_id: str) -> bool:
        pool = self._pool
        if pool is None:
            raise SinkError(f"PostgreSQL sink {self.shown} is not running")
        try:
            async with asyncio.timeout(self._timeout):
                return await pool.fetchval(SELECT_ONE, order_id) is not None
        except (TimeoutError, *_FAILURES) as exc:
            raise SinkError(
                f"PostgreSQL at {self.shown}: lookup of order {order_id}: {one_line(exc)}"
            ) from exc

    async def set_status(self, order: Order, status: str, at_ms: int) -> None:
        """The order's final status: one autocommitted UPDATE (idempotent)."""
        pool = self._pool
        if pool is None:
            raise SinkError(f"PostgreSQL sink {self.shown} is not running", definite=True)
        try:
            async with asyncio.timeout(self._timeout):
                await pool.execute(UPDATE_STATUS, status, order.order_id)
        except (TimeoutError, *_FAILURES) as exc:
            raise SinkError(
                f"PostgreSQL at {self.shown}: status {status} of order {order.order_id}:"
                f" {one_line(exc) if not isinstance(exc, TimeoutError) else 'timed out'}"
            ) from exc

    async def statuses(self, order_ids: list[str]) -> dict[str, str]:
        pool = self._pool
        if pool is None:
            raise SinkError(f"PostgreSQL sink {self.shown} is not running")
        try:
            async with asyncio.timeout(self._timeout * 4):
                rows = await pool.fetch(SELECT_STATUSES, order_ids)
        except (TimeoutError, *_FAILURES) as exc:
            raise SinkError(f"PostgreSQL at {self.shown}: status lookup: {one_line(exc)}") from exc
        return {str(r["order_id"]): str(r["status"]) for r in rows}

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await _close_pool(pool, self._timeout)


async def _close_pool(pool: asyncpg.Pool, seconds: float) -> None:
    """Close gracefully (waits for connections in use), terminate past *seconds*."""
    try:
        await asyncio.wait_for(pool.close(), seconds)
    except TimeoutError:
        pool.terminate()
