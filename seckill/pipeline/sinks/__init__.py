"""Where confirmed orders go: one small Protocol, one module per backend.

Every sink is idempotent on ``order_id`` (a primary key, or the webhook's
``Idempotency-Key``), so the pipeline may deliver an order again after a
retry, a re-claim from a dead process or a restart, and it is still written
once (docs/API.md §6, invariant 3).

``sink_from_url`` picks the backend from the URL scheme:

- ``sqlite:///orders.db`` — a path relative to the working directory;
  ``sqlite:////abs/path/orders.db`` — an absolute one (``sqlite:///`` followed
  by the path, as SQLAlchemy spells it; ``Settings.sink_url`` builds this).
- ``http://…`` / ``https://…`` — a webhook, one POST per order.
- ``postgresql://…`` / ``postgres://…`` — a libpq-style DSN for asyncpg.

Backends are imported on first use, so importing this package costs nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol, runtime_checkable
from urllib.parse import SplitResult, urlsplit

from seckill.timefmt import format_rfc3339

__all__ = ["CheckableSink", "Order", "Sink", "SinkError", "StatusSink", "sink_from_url"]


#: the ``orders`` table of every database sink (docs/API.md §6), in this order
COLUMNS = ("order_id", "sale_id", "user_id", "quantity", "created_at", "confirmed_at", "status")
#: the table before issue 15 (no ``status``): a sink migrates it on start
#: (``ALTER TABLE orders ADD COLUMN status … DEFAULT 'confirmed'``)
LEGACY_COLUMNS = COLUMNS[:-1]
#: the final statuses a sink hears after ``confirmed`` (issue 15)
FINAL_STATUSES = ("paid", "expired", "cancelled")


@dataclass(frozen=True, slots=True)
class Order:
    """What the pipeline hands a sink."""

    order_id: str
    sale_id: str
    user_id: str
    quantity: int
    created_at_ms: int  # ms since the epoch, UTC


class SinkError(Exception):
    """A delivery failed. The message is one line for operators.

    What the failure proves decides what the pipeline may do with the order's
    stock (docs/API.md §6):

    - ``definite``: this try certainly did not write the order (the request
      never left, the database refused or rolled back the statement). Only
      such failures may ever lead to a release of the stock.
    - ``permanent`` (implies definite): the sink refused the order itself (a
      webhook 4xx other than 408/429, a constraint): retrying cannot help.
    - neither: *unknown* — the order may have been written (a timeout or a
      reset after the request went out, a 5xx, 408, 429). The stock stays held.
    """

    def __init__(self, message: str, *, definite: bool = False, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.definite = definite or permanent


@runtime_checkable
class Sink(Protocol):
    async def start(self) -> None:
        """Connect / create the table; SinkError if the sink is unusable."""

    async def deliver(self, order: Order) -> bool | None:
        """Write *order* once, whatever the number of calls; SinkError on any
        failure. True when the receiver settled it as paid with its answer
        (the webhook's ``{"paid": true}``); None otherwise."""

    async def close(self) -> None:
        """Release connections; safe to call twice, or without start()."""


@runtime_checkable
class CheckableSink(Protocol):
    """A sink that can tell whether an order is written (the database sinks).

    The pipeline asks before it releases an order's stock, and before it
    parks an order as undetermined: a row that exists means confirmed."""

    async def contains(self, order_id: str) -> bool:
        """True when *order_id* is in the sink (committed); SinkError when it
        cannot tell."""


@runtime_checkable
class StatusSink(Protocol):
    """A sink that hears an order's final status (issue 15): paid, expired,
    or cancelled after it was confirmed. Idempotent: the same status again
    changes nothing; SinkError on failure (retried by the pipeline)."""

    async def set_status(self, order: Order, status: str, at_ms: int) -> None:
        """Record *status* for *order* (written earlier by deliver())."""


@runtime_checkable
class StatusReader(Protocol):
    """A sink that can tell an order's status (the database sinks): the
    reconciler compares it with Redis's."""

    async def statuses(self, order_ids: list[str]) -> dict[str, str]:
        """order id -> status, for the ids the sink holds."""


def one_line(exc: BaseException) -> str:
    """An exception as one short line: its text (or its type), whitespace collapsed."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def created_at_text(order: Order) -> str:
    """The order's created_at as RFC 3339; SinkError if it is not a time."""
    try:
        return format_rfc3339(order.created_at_ms)
    except (ValueError, OverflowError, OSError, TypeError) as exc:
        raise SinkError(
            f"order {order.order_id}: created_at_ms={order.created_at_ms!r} is not a time"
            f" ({one_line(exc)})",
            permanent=True,
        ) from exc


def safe_url(parts: SplitResult) -> str:
    """The URL for messages and logs: no password, no query (they may hold secrets)."""
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    user = f"{parts.username}@" if parts.username else ""
    return f"{parts.scheme}://{user}{host}{port}{parts.path}"


_SCHEMES = "sqlite:///PATH, http(s)://HOST/… or postgresql://…"


def _shown(url: str) -> str:
    """*url* quoted for an error message, its password (if any) masked."""
    return repr(re.sub(r"(//[^/?#@:]*:)[^/?#@]*@", r"\1***@", url))


def sink_from_url(url: str, *, timeout: float = 5.0) -> Sink:
    """The sink for *url* (not started); ValueError with one sentence if it is not usable.

    *timeout* bounds each delivery (and connecting, for PostgreSQL), in seconds.
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"An order sink URL is required: {_SCHEMES}.")
    if not timeout > 0:
        raise ValueError(f"The sink timeout must be a positive number of seconds, got {timeout!r}.")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- validates the port (ValueError when out of range)
    except ValueError as exc:
        raise ValueError(
            f"The order sink URL {_shown(url)} is malformed ({one_line(exc)})."
        ) from None
    scheme = parts.scheme.lower()
    # A SQLite path is taken literally (Settings.sink_url pastes --data-dir in
    # as is, spaces included); a network URL with whitespace is a typo.
    if scheme != "sqlite" and re.search(r"\s", url):
        raise ValueError(f"The order sink URL {_shown(url)} contains whitespace.")

    if scheme == "sqlite":
        if not url.lower().startswith("sqlite:///"):
            raise ValueError(
                f"A SQLite sink URL is sqlite:/// followed by a file path "
                f"(sqlite:////abs/orders.db or sqlite:///relative/orders.db), got {_shown(url)}."
            )
        path = url[len("sqlite:///") :]
        if not path.strip() or path.endswith("/") or parts.query or parts.fragment:
            raise ValueError(
                f"A SQLite sink URL names a file, with no ? or # in it, got {_shown(url)}."
            )
        from seckill.pipeline.sinks.sqlite import SQLiteSink

        return SQLiteSink(path, timeout=timeout)

    if scheme in ("http", "https"):
        if not parts.hostname:
            raise ValueError(f"A webhook sink URL needs a host, got {_shown(url)}.")
        if parts.fragment:
            raise ValueError(f"A webhook sink URL takes no #fragment, got {_shown(url)}.")
        from seckill.pipeline.sinks.webhook import WebhookSink

        return WebhookSink(url, timeout=timeout)

    if scheme in ("postgresql", "postgres"):
        if parts.fragment:
            raise ValueError(f"A PostgreSQL sink URL takes no #fragment, got {_shown(url)}.")
        from seckill.pipeline.sinks.postgres import PostgresSink

        return PostgresSink(url, timeout=timeout)

    shown = f"{parts.scheme}://" if parts.scheme else _shown(url)
    raise ValueError(f"Unsupported order sink {shown}: use {_SCHEMES}.")
