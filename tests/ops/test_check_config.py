"""``seckill serve --check-config``: the configuration validated and printed
with its secrets masked, exit 0 (valid) or 2 (one stderr line), without
serving, connecting or touching the data dir."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from seckill.process.procs import free_port
from tests.helpers.cli import assert_one_line_error, run_module

ADMIN = "admin-token-0123456789"
JWT = "j" * 40
METRICS = "metrics-token-0123456789"


def check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_module("seckill", "serve", "--check-config", *args, env=env, timeout=30)


def shown(result: subprocess.CompletedProcess[str]) -> dict[str, str]:
    """The printed settings: ``name  value`` lines, then the OK line."""
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "seckill: configuration OK", result.stdout
    return dict(line.split(None, 1) for line in lines[:-1])


def test_a_valid_configuration_is_printed_masked_and_nothing_starts(tmp_path: Path) -> None:
    port = free_port()
    data_dir = tmp_path / "never-created"
    result = check(
        "--host", "0.0.0.0", "--port", str(port), "--processes", "4",
        "--redis-url", "redis://:redis-secret@10.0.0.7:6379/0",  # nothing listens there
        "--order-sink", "postgresql://shop:pg-secret@db:5432/shop?password=pg-secret2&x=1",
        "--data-dir", str(data_dir), "--auth", "jwt", "--metrics-token", METRICS,
        "--role", "gateway", "--log-format", "json",
        env={"SECKILL_ADMIN_TOKEN": ADMIN, "SECKILL_JWT_SECRET": JWT},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    settings = shown(result)
    assert settings["host"] == "0.0.0.0" and settings["port"] == str(port)
    assert settings["processes"] == "4" and settings["role"] == "gateway"
    assert settings["log_format"] == "json" and settings["auth"] == "jwt"
    assert settings["redis_url"] == "redis://:***@10.0.0.7:6379/0"
    assert settings["order_sink"] == "postgresql://shop:***@db:5432/shop?password=***&x=1"
    for secret in ("admin_token", "jwt_secret", "metrics_token"):
        assert settings[secret] == "***"
    for value in (ADMIN, JWT, METRICS, "redis-secret", "pg-secret"):
        assert value not in result.stdout
    assert not data_dir.exists(), "--check-config must not create the data dir"


def test_defaults_are_valid_and_say_what_they_mean() -> None:
    result = check()
    assert result.returncode == 0, result.stderr
    settings = shown(result)
    assert settings["redis_url"] == "embedded"
    assert settings["admin_token"] == "generated at start"
    assert settings["role"] == "all" and settings["log_format"] == "text"
    assert settings["order_sink"].startswith("sqlite:///") and settings["order_sink"].endswith(
        "/var/orders.db"
    )


def test_environment_variables_are_checked_too() -> None:
    result = check(env={"SECKILL_LOG_FORMAT": "json", "SECKILL_ROLE": "worker"})
    assert result.returncode == 0, result.stderr
    settings = shown(result)
    assert (settings["log_format"], settings["role"]) == ("json", "worker")
    assert shown(check(env={"SECKILL_ADMIT_BATCH": "1"}))["admit_batch"] == "1"


@pytest.mark.parametrize(
    ("args", "env", "fragment"),
    [
        (("--processes", "0"), {}, "--processes must be 1..64"),
        (("--redis-url", "http://x"), {}, "--redis-url must start with"),
        (("--order-sink", "ftp://x"), {}, "--order-sink"),
        (("--auth", "jwt"), {}, "SECKILL_JWT_SECRET"),
        ((), {"SECKILL_ADMIN_TOKEN": "short"}, "SECKILL_ADMIN_TOKEN must be at least 16"),
        (("--role", "cook"), {}, "--role"),
        (("--log-format", "xml"), {}, "--log-format"),
        ((), {"SECKILL_LOG_FORMAT": "yaml"}, "--log-format"),
        (("--port", "http"), {}, "--port"),
        (("--admit-batch", "0"), {}, "--admit-batch must be 1..256"),
        ((), {"SECKILL_ADMIT_BATCH": "257"}, "--admit-batch must be 1..256"),
    ],
)
def test_an_invalid_configuration_is_one_line_and_exit_2(
    args: tuple[str, ...], env: dict[str, str], fragment: str
) -> None:
    result = check(*args, env=env)
    assert_one_line_error(result, fragment)
    assert result.stdout == "", "nothing is printed for an invalid configuration"
