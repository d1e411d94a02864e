"""The one launcher of ``seckill serve``: environment policy, readiness, logs,
stopping the whole group, and dying with its parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from seckill.process.procs import alive, children_of
from seckill.tools.launcher import INHERITED, GatewayProcess, LaunchError, gateway_env
from tests.helpers.gateway import wait_for

OPERATOR_SHELL = {
    "PATH": "/usr/bin",
    "SECKILL_REDIS_URL": "redis://production:6379/0",
    "SECKILL_ORDER_SINK": "postgresql://shop/orders",
    "SECKILL_ADMIN_TOKEN": "the-operators-own-token",
    "SECKILL_LOG_LEVEL": "DEBUG",
    "SECKILL_REDIS_SERVER": "/usr/bin/redis-server",
}


def test_a_tools_gateway_is_not_pointed_elsewhere_by_the_shell() -> None:
    env = gateway_env({"SECKILL_ADMIN_TOKEN": "mine-0123456789abcdef"}, base=OPERATOR_SHELL)
    assert "SECKILL_REDIS_URL" not in env
    assert "SECKILL_ORDER_SINK" not in env
    assert env["SECKILL_ADMIN_TOKEN"] == "mine-0123456789abcdef"  # what the tool passes wins
    assert {k for k in env if k.startswith("SECKILL_")} == INHERITED | {"SECKILL_ADMIN_TOKEN"}
    assert env["SECKILL_LOG_LEVEL"] == "DEBUG"
    assert env["PATH"] == "/usr/bin"


def test_the_operators_gateway_keeps_every_setting() -> None:
    env = gateway_env(base=OPERATOR_SHELL, operator=True)
    assert {k: env[k] for k in OPERATOR_SHELL} == OPERATOR_SHELL


@pytest.mark.multiprocess
def test_a_stray_redis_url_in_the_shell_does_not_reach_the_gateway(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A shell left pointing at another Redis: the tool's gateway still uses
    its own embedded server (it would refuse to start on the bogus URL)."""
    monkeypatch.setenv("SECKILL_REDIS_URL", "redis://127.0.0.1:1/0")
    with GatewayProcess() as gw:
        gw.wait_ready()
        assert gw.redis_url != "redis://127.0.0.1:1/0"
        assert gw.redis_url.startswith("redis://:") and "@127.0.0.1:" in gw.redis_url
        assert (gw.data_dir / "redis").is_dir()  # the embedded server's own data
        assert "serving on" in gw.output()
        assert gw.stop() == 0


@pytest.mark.multiprocess
def test_a_gateway_that_cannot_start_is_one_clear_error() -> None:
    gw = GatewayProcess("--processes", "0")
    try:
        with pytest.raises(LaunchError, match=r"exited with code 2 .*--processes must be 1\.\.64"):
            gw.wait_ready(timeout=30)
    finally:
        gw.kill()
    assert gw.own_dir is None  # its temporary directory is gone


@pytest.mark.multiprocess
def test_stop_takes_the_whole_group_and_the_temporary_dir(redis_binary: str | None) -> None:
    extra = ["--redis-server", redis_binary] if redis_binary else []
    gw = GatewayProcess("--processes", "2", *extra)
    own = gw.own_dir
    assert own is not None
    try:
        gw.wait_ready()
        group = [gw.pid, *children_of(gw.pid)]
        assert len(group) >= 3  # supervisor, two children, the embedded server
    finally:
        code = gw.stop()
    assert code == 0
    wait_for(lambda: not any(alive(pid) for pid in group), 10, "every process of the group")
    assert not own.exists()


@pytest.mark.multiprocess
@pytest.mark.fault
def test_a_gateway_dies_with_the_tool_that_launched_it(tmp_path: Path) -> None:
    """kill -9 of the tool: the kernel's parent-death signal stops its gateway,
    which drains and stops its embedded server in turn."""
    ready = tmp_path / "pid"
    tool = textwrap.dedent(
        f"""
        import pathlib, time
        from seckill.tools.launcher import GatewayProcess
        here = pathlib.Path({str(tmp_path)!r})
        gw = GatewayProcess("--data-dir", str(here / "data"), log_path=here / "gw.log")
        gw.wait_ready()
        pathlib.Path({str(ready)!r}).write_text(str(gw.pid))
        time.sleep(120)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", tool], start_new_session=True)
    try:
        wait_for(lambda: ready.exists() and ready.read_text() != "", 60, "the tool's gateway")
        gateway = int(ready.read_text())
        group = [gateway, *children_of(gateway)]
        assert alive(gateway)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(10)
        wait_for(lambda: not any(alive(pid) for pid in group), 30, "the orphaned gateway to stop")
    finally:
        parent.kill()
        parent.wait(10)
