"""Order sinks against real backends: a SQLite file, a local aiohttp webhook, a PostgreSQL server.

The property every sink keeps (docs/API.md §6, invariant 3): an order delivered any
number of times, concurrently or not, is written exactly once.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import msgspec
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from seckill.pipeline.consumer import GROUP
from seckill.pipeline.sinks import Order, Sink, SinkError, sink_from_url
from seckill.pipeline.sinks.postgres import PostgresSink
from seckill.pipeline.sinks.sqlite import SQLiteSink
from seckill.pipeline.sinks.webhook import WebhookSink
from seckill.process.procs import free_port
from seckill.redis import keys
from seckill.redis.scripts import Scripts
from seckill.timefmt import parse_rfc3339
from seckill.tools.invariants import check_sale
from tests.helpers.ci import missing
from tests.helpers.pg import PostgresServer, find_bindir

AiohttpServer = Callable[[web.Application], Awaitable[TestServer]]

T0 = 1_795_608_000_123  # 2026-11-25T12:00:00.123Z


def orders(n: int, sale: str = "s1") -> list[Order]:
    return [Order(f"{sale}.{i}", sale, f"u{i}", 1 + i % 3, T0 + i) for i in range(n)]


def assert_one_line(exc: pytest.ExceptionInfo[SinkError]) -> str:
    message = str(exc.value)
    assert message and "\n" not in message, message
    return message


# --- SQLite -----------------------------------------------------------------


@pytest.fixture
async def sqlite_sink(tmp_path: Path) -> AsyncIterator[SQLiteSink]:
    sink = SQLiteSink(tmp_path / "var" / "orders.db")
    await sink.start()
    yield sink
    await sink.close()


def sqlite_rows(path: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT * FROM orders ORDER BY order_id").fetchall()


async def test_sqlite_concurrent_deliveries_write_each_order_once(sqlite_sink: SQLiteSink) -> None:
    batch = orders(500)
    await asyncio.gather(*(sqlite_sink.deliver(o) for o in batch))
    rows = sqlite_rows(sqlite_sink.path)
    assert len(rows) == 500
    by_id = {r[0]: r for r in rows}
    assert by_id["s1.7"][:5] == ("s1.7", "s1", "u7", 2, "2026-11-25T12:00:00.130Z")
    confirmed = parse_rfc3339(str(by_id["s1.7"][5]))
    assert abs(confirmed - datetime.now(UTC).timestamp() * 1000) < 60_000


async def test_sqlite_duplicates_are_one_row(sqlite_sink: SQLiteSink) -> None:
    order = Order("s1.1", "s1", "alice", 2, T0)
    await sqlite_sink.deliver(order)
    (first,) = sqlite_rows(sqlite_sink.path)
    # again, and again many times at once (a retry racing a re-claim)
    await asyncio.gather(*(sqlite_sink.deliver(order) for _ in range(20)))
    assert sqlite_rows(sqlite_sink.path) == [first]  # the first confirmation stands


async def test_sqlite_schema_wal_and_directory(sqlite_sink: SQLiteSink) -> None:
    assert sqlite_sink.path.parent.is_dir()  # created by start()
    with sqlite3.connect(sqlite_sink.path) as db:
        (mode,) = db.execute("PRAGMA journal_mode").fetchone()
        columns = db.execute("PRAGMA table_info(orders)").fetchall()
    assert mode == "wal"
    # (name, type, not null, primary key)
    assert [(c[1], c[2], c[3], c[5]) for c in columns] == [
        ("order_id", "TEXT", 0, 1),
        ("sale_id", "TEXT", 1, 0),
        ("user_id", "TEXT", 1, 0),
        ("quantity", "INTEGER", 1, 0),
        ("created_at", "TEXT", 1, 0),
        ("confirmed_at", "TEXT", 1, 0),
        ("status", "TEXT", 1, 0),  # issue 15: confirmed, then paid / expired / cancelled
    ]


async def test_sqlite_close_finishes_queued_deliveries(tmp_path: Path) -> None:
    sink = SQLiteSink(tmp_path / "orders.db")
    await sink.start()
    batch = orders(100)
    # gather starts its tasks in order: every delivery is queued before close() runs
    results = await asyncio.gather(
        *(sink.deliver(o) for o in batch), sink.close(), return_exceptions=True
    )
    assert results == [None] * 101
    assert len(sqlite_rows(sink.path)) == 100
    with pytest.raises(SinkError):
        await sink.deliver(batch[0])
    await sink.close()  # twice is fine


async def test_sqlite_one_bad_order_does_not_fail_its_batch(sqlite_sink: SQLiteSink) -> None:
    good = orders(50)
    bad = Order("s1.bad", "s1", "u", 2**70, T0)  # no SQLite INTEGER holds it
    results = await asyncio.gather(
        *(sqlite_sink.deliver(o) for o in [*good[:25], bad, *good[25:]]), return_exceptions=True
    )
    assert isinstance(results[25], SinkError) and "s1.bad" in str(results[25])
    assert results[25].permanent  # refused: retrying cannot help
    assert results[:25] + results[26:] == [None] * 50
    assert len(sqlite_rows(sqlite_sink.path)) == 50


@pytest.mark.fault
async def test_sqlite_locked_database_is_a_sink_error(tmp_path: Path) -> None:
    sink = SQLiteSink(tmp_path / "orders.db", timeout=0.3)
    await sink.start()
    try:
        other = sqlite3.connect(sink.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holding the write lock
        try:
            with pytest.raises(SinkError) as exc:
                await sink.deliver(orders(1)[0])
            assert_one_line(exc)
            # rolled back ("database is locked") or never taken: not written
            assert (exc.value.definite, exc.value.permanent) == (True, False), str(exc.value)
            assert await sink.contains("s1.0") is False  # reads do not wait for the writer
        finally:
            other.execute("ROLLBACK")
            other.close()
        await sink.deliver(orders(1)[0])  # the lock is gone: a retry succeeds
        assert len(sqlite_rows(sink.path)) == 1
        assert await sink.contains("s1.0") is True
    finally:
        await sink.close()


@pytest.mark.fault
async def test_sqlite_rows_queued_behind_a_locked_batch_are_definitely_not_written(
    tmp_path: Path,
) -> None:
    """A row still waiting when its caller gives up is skipped by the writer."""
    sink = SQLiteSink(tmp_path / "orders.db", timeout=0.4)
    await sink.start()
    other = sqlite3.connect(sink.path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        first, second = orders(2)
        results = await asyncio.gather(
            sink.deliver(first), sink.deliver(second), return_exceptions=True
        )
        assert all(isinstance(r, SinkError) and r.definite for r in results), results
    finally:
        other.execute("ROLLBACK")
        other.close()
        await sink.close()
    assert sqlite_rows(sink.path) == []


async def test_sqlite_constraint_is_a_refusal(sqlite_sink: SQLiteSink) -> None:
    with pytest.raises(SinkError) as exc:
        await sqlite_sink.deliver(Order("s1.x", "s1", "u", 2**70, T0))  # no INTEGER holds it
    assert (exc.value.definite, exc.value.permanent) == (True, True), str(exc.value)
    assert await sqlite_sink.contains("s1.x") is False


async def test_sqlite_unusable_path_fails_start(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    sink = SQLiteSink(tmp_path / "afile" / "orders.db")
    with pytest.raises(SinkError, match="cannot open SQLite database") as exc:
        await sink.start()
    assert_one_line(exc)
    await sink.close()


async def test_sqlite_foreign_orders_table_fails_start(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "orders.db") as db:
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)")
    sink = SQLiteSink(tmp_path / "orders.db")
    with pytest.raises(SinkError, match="table orders has columns id, total") as exc:
        await sink.start()
    assert_one_line(exc)
    await sink.close()


async def test_sqlite_deliver_before_start_fails(tmp_path: Path) -> None:
    with pytest.raises(SinkError, match="not running"):
        await SQLiteSink(tmp_path / "orders.db").deliver(orders(1)[0])


async def test_sqlite_url_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = sink_from_url("sqlite:///var/orders.db")
    absolute = sink_from_url(f"sqlite:///{tmp_path}/abs/orders.db")  # sqlite:////tmp/…
    assert isinstance(relative, SQLiteSink) and isinstance(absolute, SQLiteSink)
    assert relative.path == Path("var/orders.db")
    assert absolute.path == tmp_path / "abs" / "orders.db"
    for sink in (relative, absolute):
        await sink.start()
        await sink.deliver(orders(1)[0])
        await sink.close()
    assert (tmp_path / "var" / "orders.db").is_file()
    assert (tmp_path / "abs" / "orders.db").is_file()


# --- Webhook ----------------------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    peer: object


@dataclass
class Receiver:
    """A webhook endpoint that records what it gets and answers ``status``."""

    url: str = ""
    status: int = 200
    hang: bool = False
    requests: list[Received] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(
            Received(
                request.method,
                request.path_qs,
                dict(request.headers),
                await request.read(),
                request.transport.get_extra_info("peername") if request.transport else None,
            )
        )
        if self.hang:
            await self.release.wait()  # until teardown: the sink must give up first
        if self.status in (301, 302, 303, 307, 308):
            raise web.HTTPFound("/elsewhere") if self.status == 302 else web.HTTPSeeOther("/else")
        return web.json_response({"ok": self.status < 300}, status=self.status)


@pytest.fixture
async def receiver(aiohttp_server: AiohttpServer) -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", rec.handle)
    server = await aiohttp_server(app)
    rec.url = str(server.make_url("/hooks/orders?sig=abc"))
    yield rec
    rec.release.set()


@pytest.fixture
async def webhook(receiver: Receiver) -> AsyncIterator[WebhookSink]:
    sink = WebhookSink(receiver.url, timeout=2.0)
    await sink.start()
    yield sink
    await sink.close()


async def test_webhook_posts_the_order_with_its_idempotency_key(
    receiver: Receiver, webhook: WebhookSink
) -> None:
    await webhook.deliver(Order("s1.42", "s1", "alice", 2, T0))
    await webhook.deliver(Order("s1.43", "s1", "bob", 1, T0))
    req, second = receiver.requests
    assert second.peer == req.peer  # the connection was kept alive
    assert (req.method, req.path) == ("POST", "/hooks/orders?sig=abc")
    assert req.headers["Idempotency-Key"] == "s1.42"
    assert req.headers["Content-Type"] == "application/json"
    assert msgspec.json.decode(req.body) == {
        "order_id": "s1.42",
        "sale_id": "s1",
        "user_id": "alice",
        "quantity": 2,
        "created_at": "2026-11-25T12:00:00.123Z",
    }


async def test_webhook_concurrent_deliveries_share_connections(
    receiver: Receiver, webhook: WebhookSink
) -> None:
    await asyncio.gather(*(webhook.deliver(o) for o in orders(200)))
    keys = [r.headers["Idempotency-Key"] for r in receiver.requests]
    assert sorted(keys) == sorted(o.order_id for o in orders(200))
    assert all(
        msgspec.json.decode(r.body)["order_id"] == r.headers["Idempotency-Key"]
        for r in receiver.requests
    )
    # one session: connections are pooled (aiohttp's 100 by default) and kept alive
    pooled = {r.peer for r in receiver.requests}
    assert len(pooled) <= 100
    receiver.requests.clear()
    for order in orders(20, sale="s2"):
        await webhook.deliver(order)
    assert {r.peer for r in receiver.requests} <= pooled  # no new connection


@pytest.mark.parametrize("status", [200, 201, 202, 204])
async def test_webhook_any_2xx_is_delivered(
    receiver: Receiver, webhook: WebhookSink, status: int
) -> None:
    receiver.status = status
    await webhook.deliver(orders(1)[0])
    assert len(receiver.requests) == 1


@pytest.mark.fault
@pytest.mark.parametrize(
    ("status", "refused"),
    [
        (500, False),
        (503, False),
        (408, False),
        (429, False),
        (302, False),
        (303, False),
        (400, True),
        (404, True),
        (409, True),
        (422, True),
    ],
)
async def test_webhook_other_statuses_are_sink_errors(
    receiver: Receiver, webhook: WebhookSink, status: int, refused: bool
) -> None:
    """A 4xx other than 408/429 is a refusal (definite, permanent); the rest
    may have been stored: unknown."""
    receiver.status = status
    with pytest.raises(SinkError, match=f"answered {status}") as exc:
        await webhook.deliver(orders(1)[0])
    assert (exc.value.definite, exc.value.permanent) == (refused, refused)
    message = assert_one_line(exc)
    assert "s1.0" in message and "sig=abc" not in message  # no query string: it may be a secret
    assert len(receiver.requests) == 1  # redirects are not followed


@pytest.mark.fault
async def test_webhook_slow_receiver_is_a_sink_error(receiver: Receiver) -> None:
    receiver.hang = True
    sink = WebhookSink(receiver.url, timeout=0.2)
    await sink.start()
    try:
        with pytest.raises(SinkError, match=r"did not answer order s1\.0 within 0\.2s") as exc:
            await sink.deliver(orders(1)[0])
        assert_one_line(exc)
        assert not exc.value.definite  # the request went out: it may be stored
    finally:
        await sink.close()


@pytest.mark.fault
async def test_webhook_connection_refused_is_a_sink_error() -> None:
    port = free_port()  # nothing listens there
    sink = sink_from_url(f"http://user:hunter2@127.0.0.1:{port}/hook", timeout=2.0)
    await sink.start()  # a receiver that is down does not stop the gateway from starting
    try:
        with pytest.raises(SinkError, match=f"127.0.0.1:{port}") as exc:
            await sink.deliver(orders(1)[0])
        assert "hunter2" not in assert_one_line(exc)
        assert (exc.value.definite, exc.value.permanent) == (True, False)  # never sent
    finally:
        await sink.close()


# --- PostgreSQL -------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL server for the session (the binaries from Debian's ``postgresql``)."""
    bindir = find_bindir()
    if bindir is None:
        missing(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb);"
            " install Debian's postgresql package (.ci/run does)"
        )
    server = PostgresServer(bindir)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
async def pg_url(postgres_server: str) -> str:
    """The session's server, without an orders table."""
    conn = await asyncpg.connect(postgres_server)
    try:
        await conn.execute("DROP TABLE IF EXISTS orders")
    finally:
        await conn.close()
    return postgres_server


@pytest.fixture
async def pg_sink(pg_url: str) -> AsyncIterator[PostgresSink]:
    sink = PostgresSink(pg_url)
    await sink.start()
    yield sink
    await sink.close()


async def pg_fetch(url: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(query)
        return rows
    finally:
        await conn.close()


@pytest.mark.timeout(60)
async def test_postgres_concurrent_deliveries_write_each_order_once(
    pg_url: str, pg_sink: PostgresSink
) -> None:
    batch = orders(500)
    await asyncio.gather(*(pg_sink.deliver(o) for o in batch))
    rows = await pg_fetch(pg_url, "SELECT * FROM orders ORDER BY order_id")
    assert len(rows) == 500
    row = next(r for r in rows if r["order_id"] == "s1.7")
    assert (row["sale_id"], row["user_id"], row["quantity"]) == ("s1", "u7", 2)
    assert row["created_at"] == datetime(2026, 11, 25, 12, 0, 0, 130_000, tzinfo=UTC)
    assert abs(row["confirmed_at"] - datetime.now(UTC)).total_seconds() < 60


@pytest.mark.timeout(60)
async def test_postgres_duplicates_are_one_row(pg_url: str, pg_sink: PostgresSink) -> None:
    order = Order("s1.1", "s1", "alice", 2, T0)
    await pg_sink.deliver(order)
    first = await pg_fetch(pg_url, "SELECT * FROM orders")
    await asyncio.gather(*(pg_sink.deliver(order) for _ in range(20)))
    assert await pg_fetch(pg_url, "SELECT * FROM orders") == first


@pytest.mark.timeout(60)
async def test_postgres_classifies_failures_and_looks_rows_up(
    pg_url: str, pg_sink: PostgresSink
) -> None:
    order = Order("s1.1", "s1", "alice", 2, T0)
    assert await pg_sink.contains(order.order_id) is False
    await pg_sink.deliver(order)
    assert await pg_sink.contains(order.order_id) is True
    # a value the column cannot take: refused, nothing written
    with pytest.raises(SinkError) as exc:
        await pg_sink.deliver(Order("s1.2", "s1", "bob", 2**40, T0))
    assert (exc.value.definite, exc.value.permanent) == (True, True), str(exc.value)
    assert await pg_sink.contains("s1.2") is False
    # the server refused the statement (no table): definite, not permanent
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("ALTER TABLE orders RENAME TO orders_away")
        with pytest.raises(SinkError) as exc:
            await pg_sink.deliver(Order("s1.3", "s1", "carol", 1, T0))
        assert (exc.value.definite, exc.value.permanent) == (True, False), str(exc.value)
    finally:
        await conn.execute("ALTER TABLE orders_away RENAME TO orders")
        await conn.close()


@pytest.mark.timeout(60)
async def test_checker_reads_a_postgres_sink(
    pg_url: str, pg_sink: PostgresSink, redis: Redis, scripts: Scripts
) -> None:
    """loadtest.check's sink checks work on PostgreSQL too: sink_within_sold
    fails when the backend holds a unit more than sold."""
    await scripts.sale_put("pgc", {"stock": 2})
    await redis.xgroup_create(keys.stream("pgc"), GROUP, id="0", mkstream=True)
    for user in ("a", "b"):
        admitted = await scripts.admit("pgc", user, 1)
        [[_, [(entry_id, _)]]] = await redis.xreadgroup(GROUP, "c", {keys.stream("pgc"): ">"})
        await pg_sink.deliver(Order(admitted.order_id, "pgc", user, 1, T0))
        assert await scripts.confirm("pgc", admitted.order_id, GROUP, entry_id)
    checks = {c.name: c for c in await check_sale(redis, "pgc", sink_url=pg_url)}
    assert all(c.ok for c in checks.values()), [c.line() for c in checks.values()]
    assert checks["sink_within_sold"].detail.startswith("the sink holds 2 units in 2 rows")
    await pg_sink.deliver(Order("pgc.GHOSTGHOSTGHOST0", "pgc", "c", 1, T0))
    checks = {c.name: c for c in await check_sale(redis, "pgc", sink_url=pg_url)}
    assert not checks["sink_within_sold"].ok
    assert "the sink holds 1 unit(s) more than sold" in checks["sink_within_sold"].detail


@pytest.mark.timeout(60)
async def test_postgres_creates_the_table(pg_url: str) -> None:
    assert await pg_fetch(pg_url, "SELECT to_regclass('orders') AS t") == [(None,)]
    # several gateway processes starting at once: one creates, none fails
    sinks = [PostgresSink(pg_url) for _ in range(4)]
    try:
        await asyncio.gather(*(s.start() for s in sinks))
    finally:
        await asyncio.gather(*(s.close() for s in sinks))
    columns = await pg_fetch(
        pg_url,
        """SELECT column_name, data_type, is_nullable FROM information_schema.columns
           WHERE table_name = 'orders' ORDER BY ordinal_position""",
    )
    assert [tuple(c) for c in columns] == [
        ("order_id", "text", "NO"),
        ("sale_id", "text", "NO"),
        ("user_id", "text", "NO"),
        ("quantity", "integer", "NO"),
        ("created_at", "timestamp with time zone", "NO"),
        ("confirmed_at", "timestamp with time zone", "NO"),
        ("status", "text", "NO"),
    ]
    (pk,) = await pg_fetch(
        pg_url,
        """SELECT a.attname FROM pg_index i JOIN pg_attribute a
           ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
           WHERE i.indrelid = 'orders'::regclass AND i.indisprimary""",
    )
    assert pk["attname"] == "order_id"


@pytest.mark.fault
async def test_postgres_unreachable_fails_start() -> None:
    port = free_port()  # nothing listens there
    sink = sink_from_url(f"postgresql://app:s3cret@127.0.0.1:{port}/shop", timeout=2.0)
    with pytest.raises(SinkError, match=f"cannot reach PostgreSQL at .*127.0.0.1:{port}") as exc:
        await sink.start()
    assert "s3cret" not in assert_one_line(exc)
    with pytest.raises(SinkError, match="not running"):
        await sink.deliver(orders(1)[0])
    await sink.close()


# --- sink_from_url ----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("sqlite:///orders.db", SQLiteSink),
        ("sqlite:////var/lib/seckill/orders.db", SQLiteSink),
        ("sqlite:////home/me/Application Support/orders.db", SQLiteSink),
        ("http://127.0.0.1:9000/hooks/orders", WebhookSink),
        ("HTTPS://orders.example.com/hook?token=x", WebhookSink),
        ("postgresql://app@db.internal:5432/shop", PostgresSink),
        ("postgres://app:pw@db/shop?sslmode=require", PostgresSink),
        ("postgresql:///shop?host=/run/postgresql", PostgresSink),
    ],
)
def test_sink_from_url_picks_the_backend(url: str, kind: type) -> None:
    sink = sink_from_url(url)
    assert isinstance(sink, kind)
    assert isinstance(sink, Sink)  # the Protocol (runtime_checkable)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "   ",
        "orders.db",
        "/var/lib/orders.db",
        "redis://localhost:6379/0",
        "mysql://db/shop",
        "ftp://example.com/orders",
        "sqlite:orders.db",
        "sqlite://orders.db",
        "sqlite://host/orders.db",
        "sqlite:///",
        "sqlite:/// ",
        "sqlite:///var/",
        "sqlite:///orders.db?mode=ro",
        "http://",
        "http:///hooks",
        "https://:443/hook",
        "http://example.com:99999/hook",
        "http://example.com:port/hook",
        "http://exa mple.com/hook",
        "http://example.com/hook#frag",
        "postgresql://db:notaport/shop",
        "http://[::1/hook",
    ],
)
def test_sink_from_url_rejects(url: str) -> None:
    with pytest.raises(ValueError) as exc:
        sink_from_url(url)
    message = str(exc.value)
    assert message.endswith(".") and "\n" not in message, message


def test_sink_from_url_hides_passwords_and_checks_timeout() -> None:
    with pytest.raises(ValueError) as exc:
        sink_from_url("postgresql://app:s3cret@db:notaport/shop")
    assert "s3cret" not in str(exc.value) and "app:***@db" in str(exc.value)
    with pytest.raises(ValueError, match="timeout"):
        sink_from_url("sqlite:///orders.db", timeout=0)


async def test_postgres_migrates_an_old_table_and_sets_statuses_idempotently(
    pg_url: str,
) -> None:
    """Issue 15: a table made before the status column gains it (every old row
    confirmed); set_status is an idempotent UPDATE; statuses() reads them."""
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(
            "CREATE TABLE orders (order_id text PRIMARY KEY, sale_id text NOT NULL,"
            " user_id text NOT NULL, quantity integer NOT NULL,"
            " created_at timestamptz NOT NULL, confirmed_at timestamptz NOT NULL)"
        )
        await conn.execute(
            "INSERT INTO orders VALUES ('s.AAAAAAAAAAAAAAAA', 's', 'u', 1, now(), now())"
        )
    finally:
        await conn.close()
    sink = PostgresSink(pg_url)
    await sink.start()
    try:
        old = Order("s.AAAAAAAAAAAAAAAA", "s", "u", 1, 0)
        new = Order("s.BBBBBBBBBBBBBBBB", "s", "v", 1, 1_700_000_000_000)
        await sink.deliver(new)
        assert await sink.statuses([old.order_id, new.order_id]) == {
            old.order_id: "confirmed",
            new.order_id: "confirmed",
        }
        for _ in range(2):
            await sink.set_status(old, "expired", 0)
            await sink.set_status(new, "paid", 0)
        await sink.deliver(new)  # a replayed delivery leaves the status alone
        assert await sink.statuses([old.order_id, new.order_id, "s.CCCCCCCCCCCCCCCC"]) == {
            old.order_id: "expired",
            new.order_id: "paid",
        }
    finally:
        await sink.close()
