"""The per-process sale cache: the public view and the local sold-out flag.

It holds, per sale, the public view (at most ``VIEW_TTL`` seconds stale, as
the contract allows) and the local sold-out flag, which lets a process answer
409 ``sold_out`` without a Redis call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

VIEW_TTL = 1.0
#: a sold-out flag is trusted this long, then one request re-asks Redis. The
#: pub/sub "sale changed" event clears it at once; the TTL is the safety net
#: for a message lost while a pub/sub connection was down.
SOLD_OUT_TTL = 2.0
#: sale ids are client input: past this many entries the cache starts over,
#: so a flood of made-up ids cannot grow it without bound.
MAX_ENTRIES = 10_000


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
