"""RFC 3339 timestamps <-> integer milliseconds since the epoch (UTC)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

#: 9999-12-31T23:59:59Z: anything later cannot be written back as RFC 3339.
MAX_MS = 253_402_300_799_000


#: RFC 3339 date-time (section 5.6): full date, "T", full time with seconds,
#: optional fraction, and a mandatory offset ("Z" or ±hh:mm); T and Z in any case.
RFC3339_RE = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})$"
)


def parse_rfc3339(value: str) -> int:
    """Milliseconds since the epoch; ValueError unless *value* is RFC 3339 with an offset."""
    m = RFC3339_RE.match(value) if isinstance(value, str) else None
    if m is None:
        raise ValueError("not an RFC 3339 timestamp (e.g. 2026-12-01T20:00:00Z)")
    date, clock, fraction, offset = m.groups()
    # datetime takes at most 6 fraction digits; milliseconds are all that is kept
    fraction = f".{fraction[:6]}" if fraction else ""
    offset = "+00:00" if offset in ("Z", "z") else offset
    dt = datetime.fromisoformat(f"{date}T{clock}{fraction}{offset}")
    ms = int(dt.timestamp() * 1000)
    if not 0 <= ms <= MAX_MS:
        raise ValueError("timestamp out of range")
    return ms


def format_rfc3339(ms: int) -> str:
    """``2026-11-25T12:00:00Z``, with ``.mmm`` when the milliseconds are not zero."""
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    if ms % 1000:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")
