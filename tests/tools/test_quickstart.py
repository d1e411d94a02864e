"""``make run`` (``python -m seckill.tools.quickstart``) as a newcomer runs it:
a gateway with the sale ``demo``, the lines to try it, a buy, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from seckill.process.procs import alive, children_of, free_port, stop_group
from tests.helpers.gateway import wait_for


@pytest.mark.multiprocess
def test_make_run_serves_the_demo_sale_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECKILL_")}
    env["SECKILL_PORT"] = str(port)  # the operator's own settings reach the gateway
    out = tmp_path / "out.txt"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "seckill.tools.quickstart"],
            cwd=tmp_path,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: b"seckill is running on" in out.read_bytes(), 60, "the banner")
        text = out.read_text()
        assert f"http://127.0.0.1:{port}" in text
        assert "export SECKILL_ADMIN_TOKEN=" in text
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/sales/demo") as resp:
            sale = json.loads(resp.read())
        assert (sale["stock_total"], sale["per_user_limit"]) == (100, 1)
        buy = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/sales/demo/orders",
            method="POST",
            headers={"X-User-Id": "alice"},
        )
        with urllib.request.urlopen(buy) as resp:
            assert resp.status == 202
        group = [proc.pid, *children_of(proc.pid)]
        group += [pid for child in group[1:] for pid in children_of(child)]
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(60) == 0
        wait_for(lambda: not any(alive(pid) for pid in group), 30, "every process to stop")
        assert (tmp_path / "var" / "redis").is_dir()  # its data stay in ./var
    finally:
        stop_group(proc, signal.SIGKILL, 10)
