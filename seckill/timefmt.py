"""RFC 3339 timestamps <-> integer milliseconds since the epoch (UTC)."""

from __future__ import annotations

from datetime import UTC, datetime

#: 9999-12-31T23:59:59Z: anything later cannot be written back as RFC 3339.
MAX_MS = 253_402_300_799_000


def parse_rfc3339(value: str) -> int:
    """Milliseconds since the epoch; ValueError unless *value* is RFC 3339 with an offset."""
    if not isinstance(value, str) or len(value) > 40 or "T" not in value.upper():
        raise ValueError("not an RFC 3339 timestamp")
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        raise ValueError("an RFC 3339 timestamp needs an offset, e.g. Z")
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
