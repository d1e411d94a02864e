"""The start-up safety limits of Settings.validated (the CLI's exit 2 is in
tests/process/test_startup.py)."""

from __future__ import annotations

import pytest

from seckill.settings import ConfigError, Settings


def test_an_hs256_secret_of_32_bytes_is_the_shortest_accepted() -> None:
    assert Settings(auth="jwt", jwt_secret="k" * 32).validated().jwt_secret == "k" * 32
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        Settings(auth="jwt", jwt_secret="k" * 31).validated()
    # counted in bytes, not characters
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        Settings(auth="jwt", jwt_secret="é" * 15).validated()
    assert Settings(auth="jwt", jwt_secret="é" * 16).validated()


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"metrics_token": "x" * 15}, "--metrics-token"),
        ({"head_timeout": 0.0}, "--head-timeout"),
        ({"head_timeout": 301.0}, "--head-timeout"),
        ({"keepalive_timeout": 0.0}, "--keepalive-timeout"),
        ({"max_connections": 0}, "--max-connections"),
        ({"redis_fsync": "no"}, "--redis-fsync"),
    ],
)
def test_bad_safety_settings_are_refused(changes: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        Settings().replace(**changes).validated()


def test_the_defaults_are_safe() -> None:
    s = Settings().validated()
    assert s.head_timeout <= 10
    assert s.keepalive_timeout == 75
    assert s.redis_fsync == "always"
    assert s.metrics_token is None
