"""Sale views (API.md §4, §5) and the per-process sale cache.

The cache holds, per sale, the public view (at most ``VIEW_TTL`` seconds
stale, as the contract allows) and the local sold-out flag, which lets a
process answer 409 ``sold_out`` without a Redis call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from seckill.timefmt import format_rfc3339

VIEW_TTL = 1.0
#: a sold-out flag is trusted this long, then one request re-asks Redis. The
#: pub/sub "sale changed" event clears it at once; the TTL is the safety net
#: for a message lost while a pub/sub connection was down.
SOLD_OUT_TTL = 2.0
#: sale ids are client input: past this many entries the cache starts over,
#: so a flood of made-up ids cannot grow it without bound.
MAX_ENTRIES = 10_000

ORDER_STATUSES = ("queued", "confirmed", "failed", "cancelled")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def sale_status(sale: dict[str, str], at_ms: int) -> str:
    ends_at = sale.get("ends_at") or ""
    if ends_at and at_ms >= int(ends_at):
        return "ended"
    if at_ms < int(sale["starts_at"]):
        return "upcoming"
    if int(sale["stock_left"]) <= 0:
        return "sold_out"
    return "active"


def public_view(sale_id: str, sale: dict[str, str], at_ms: int) -> dict[str, Any]:
    ends_at = sale.get("ends_at") or ""
    return {
        "sale_id": sale_id,
        "name": sale["name"],
        "status": sale_status(sale, at_ms),
        "stock_total": int(sale["stock_total"]),
        "stock_left": int(sale["stock_left"]),
        "starts_at": format_rfc3339(int(sale["starts_at"])),
        "ends_at": format_rfc3339(int(ends_at)) if ends_at else None,
        "per_user_limit": int(sale["per_user_limit"]),
    }


def admin_view(sale_id: str, sale: dict[str, str], at_ms: int) -> dict[str, Any]:
    view = public_view(sale_id, sale, at_ms)
    view["orders"] = {s: int(sale.get(f"n_{s}", 0)) for s in ORDER_STATUSES}
    # The backlog is the queued orders; a "backlog" field an older version left
    # in the hash is stale and ignored.
    view["backlog"] = view["orders"]["queued"]
    return view


@dataclass(slots=True)
class _Entry:
    view_expires: float = 0.0
    view: dict[str, str] | None = None
    sold_out_until: float = 0.0
    #: bumped by every "sale changed" event; a Redis answer that was asked
    #: before the bump may not set the sold-out flag (it may predate a restock).
    generation: int = 0


class SaleCache:
    """Per-process, per-sale: a short-lived copy of the sale hash and the sold-out flag."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def _entry(self, sale_id: str) -> _Entry:
        entry = self._entries.get(sale_id)
        if entry is None:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            entry = self._entries[sale_id] = _Entry()
        return entry

    def is_sold_out(self, sale_id: str) -> bool:
        entry = self._entries.get(sale_id)
        return entry is not None and entry.sold_out_until > time.monotonic()

    def generation(self, sale_id: str) -> int:
        entry = self._entries.get(sale_id)
        return entry.generation if entry is not None else 0

    def mark_sold_out(self, sale_id: str, generation: int) -> None:
        """Set the flag, unless the sale changed since *generation* was read."""
        entry = self._entry(sale_id)
        if entry.generation == generation:
            entry.sold_out_until = time.monotonic() + SOLD_OUT_TTL

    def changed(self, sale_id: str) -> None:
        """The sale changed elsewhere (restock, cancel, update): forget what we know."""
        entry = self._entry(sale_id)
        entry.generation += 1
        entry.sold_out_until = 0.0
        entry.view = None
        entry.view_expires = 0.0

    def changed_all(self) -> None:
        for sale_id in list(self._entries):
            self.changed(sale_id)

    def cached_view(self, sale_id: str) -> tuple[bool, dict[str, str] | None]:
        """(hit, sale hash or None for a sale that does not exist)."""
        entry = self._entries.get(sale_id)
        if entry is None or entry.view_expires <= time.monotonic():
            return False, None
        return True, entry.view

    def store_view(self, sale_id: str, sale: dict[str, str] | None) -> None:
        entry = self._entry(sale_id)
        entry.view = sale
        entry.view_expires = time.monotonic() + VIEW_TTL
