from __future__ import annotations

import pytest

from seckill.timefmt import format_rfc3339, parse_rfc3339


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2026-01-01T00:00:00Z", 1_767_225_600_000),
        ("2026-01-01t00:00:00z", 1_767_225_600_000),
        ("2026-01-01T02:00:00+02:00", 1_767_225_600_000),
        ("2026-01-01T00:00:00.5Z", 1_767_225_600_500),
        ("2026-01-01T00:00:00.123456789-00:00", 1_767_225_600_123),
    ],
)
def test_parse(text: str, ms: int) -> None:
    assert parse_rfc3339(text) == ms


@pytest.mark.parametrize(
    "text",
    [
        "20260101T000000Z",
        "2026-W01-1T00:00:00Z",
        "2026-01-01T00:00Z",
        "2026-01-01T00:00:00+0000",
        "2026-01-01T00:00:00",
        "2026-01-01 00:00:00Z",
        "2026-13-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "",
        5,
        None,
    ],
)
def test_parse_rejects(text: object) -> None:
    with pytest.raises(ValueError):
        parse_rfc3339(text)  # type: ignore[arg-type]


def test_format_round_trip() -> None:
    assert format_rfc3339(1_767_225_600_000) == "2026-01-01T00:00:00Z"
    assert format_rfc3339(1_767_225_600_120) == "2026-01-01T00:00:00.120Z"
    assert parse_rfc3339(format_rfc3339(1_767_225_600_120)) == 1_767_225_600_120
