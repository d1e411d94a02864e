"""Check the invariants of docs/API.md §6 for one sale, after a load test (or any run).

    python -m loadtest.check --url URL --sale ID [--redis-url URL]
        [--sink sqlite:///PATH|postgresql://…] [--require-drained] [--wait-drained SECONDS]

With ``--redis-url`` the checks read Redis itself (every order of the sale)
and, with ``--sink``, the SQLite or PostgreSQL sink (``sink_exactly_once``;
``sink_within_sold``: the sink never holds more units than sold, nor a user
more than the limit); without it only the admin API's view
of the sale (token from ``SECKILL_ADMIN_TOKEN`` or ``--token``), which proves
less. One line per check, ``PASS name: detail`` or ``FAIL name: detail``.
Exit 0 when all pass, 1 when one fails, 2 on bad usage or an unreachable
gateway/Redis/sink (one line on stderr). ``--url`` and ``--redis-url`` also
read ``LOADTEST_URL`` and ``LOADTEST_REDIS_URL``, like the rest of the load
test; the token is the gateway's own ``SECKILL_ADMIN_TOKEN``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any, NoReturn

import click
from redis.exceptions import RedisClusterException, RedisError

from loadtest import cli
from seckill.redis.client import connect
from seckill.redis.keys import valid_id
from seckill.tools.invariants import (
    ADMIN_ONLY_NOTE,
    Check,
    CheckError,
    admin_checks,
    check_sale,
    drained,
    fetch_admin_view,
    sink_shown,
    wait_drained,
)

#: seconds between looks at the admin view while waiting for the drain.
ADMIN_POLL = 0.2


def fail(message: str) -> NoReturn:
    cli.fail("check", message)


async def _redis_checks(
    redis_url: str, sale: str, sink: str | None, require_drained: bool, wait: float | None
) -> list[Check]:
    # the gateway's own client: redis:// or, for a cluster, redis+cluster://
    clients = connect(redis_url, pool_size=8, timeout=10)
    redis = clients.redis
    try:
        await redis.ping()
        if wait is not None:
            await wait_drained(redis, sale, wait)
        return await check_sale(redis, sale, sink_url=sink, require_drained=require_drained)
    finally:
        await clients.aclose()


def _admin_view_drained(url: str, token: str, sale: str, wait: float | None) -> dict[str, Any]:
    view = fetch_admin_view(url, token, sale)
    if wait is not None:
        deadline = time.monotonic() + wait
        while not drained(view) and time.monotonic() < deadline:
            time.sleep(ADMIN_POLL)
            view = fetch_admin_view(url, token, sale)
    return view


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url",
    envvar="LOADTEST_URL",
    show_envvar=True,
    default="http://127.0.0.1:8080",
    show_default=True,
    help="The gateway's base URL (for the admin API).",
)
@click.option("--sale", "sale_id", required=True, help="The sale to check.")
@click.option("--token", envvar="SECKILL_ADMIN_TOKEN", show_envvar=True, help="Admin bearer token.")
@click.option(
    "--redis-url",
    envvar="LOADTEST_REDIS_URL",
    show_envvar=True,
    default=None,
    help="The gateway's Redis: check every order, not just the admin counters.",
)
@click.option(
    "--sink",
    default=None,
    help="sqlite:///PATH or postgresql://…: also check the sink — each confirmed order"
    " once, and never more units than sold (needs --redis-url).",
)
@click.option("--require-drained", is_flag=True, help="Fail when an order is still queued.")
@click.option(
    "--wait-drained",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Wait up to SECONDS for the backlog to drain first (implies --require-drained).",
)
def main(
    url: str,
    sale_id: str,
    token: str | None,
    redis_url: str | None,
    sink: str | None,
    require_drained: bool,
    wait_drained: float | None,
) -> None:
    """Check the invariants of one sale; exit 1 when one broke."""
    if not valid_id(sale_id):
        fail(f"--sale {sale_id!r} is not a valid sale id")
    require_drained = require_drained or wait_drained is not None
    try:
        if redis_url:
            if sink is not None:
                sink_shown(sink)  # a bad URL is bad usage, before any waiting
            checks = asyncio.run(
                _redis_checks(redis_url, sale_id, sink, require_drained, wait_drained)
            )
            note = None
        else:
            if sink is not None:
                fail("--sink needs --redis-url (the sink is checked against the orders in Redis)")
            if not token:
                fail("an admin token is needed without --redis-url: --token or SECKILL_ADMIN_TOKEN")
            view = _admin_view_drained(url, token, sale_id, wait_drained)
            checks = admin_checks(view, require_drained=require_drained)
            note = ADMIN_ONLY_NOTE
    except CheckError as exc:
        fail(str(exc))
    except (RedisError, RedisClusterException, OSError, ValueError) as exc:
        fail(f"cannot check through Redis at {redis_url}: {exc}")
    for check in checks:
        click.echo(check.line())
    if note:
        click.echo(f"NOTE {note}")
    sys.exit(0 if all(c.ok for c in checks) else 1)


def run() -> None:
    """Entry point (see :func:`loadtest.cli.run`)."""
    cli.run(main, "check")


if __name__ == "__main__":
    run()
