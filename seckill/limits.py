"""The cluster-wide token-bucket limits of the buy endpoint (API.md §5)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limits:
    """Rates in requests/s (None = unlimited); bursts in tokens (≥ 1)."""

    rate: float | None = None
    burst: int = 1
    per_user_rate: float | None = None
    per_user_burst: int = 1


UNLIMITED = Limits()
