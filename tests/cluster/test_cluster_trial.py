"""``python -m loadtest.cluster_trial`` (``make cluster-trial``), run small: a
3-primary cluster, two gateways and a worker, a sale of 200 units in 3
buckets, locust at both gateways for at most 20 s; every check passes and
nothing it started is left. Ctrl-C in the middle of the crowd stops it all
too (exit 130). And the sold-out proof on made-up timelines."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from loadtest.cluster_trial import Timeline, false_sold_out
from seckill.process.procs import stop_group
from tests.helpers.cli import ROOT
from tests.helpers.gateway import wait_for

SMALL = ["--stock", "200", "--users", "60", "--ramp", "2", "--hold", "10", "--run-time", "20"]
CHECKS = (
    "stock_sold",
    "keys_on_every_primary",
    "no_false_sold_out",
    "checker",
    "sink_exactly_once",
    "locust_clean",
    "servers_clean",
)


def test_false_sold_out_is_a_sold_out_answered_before_an_admitted_buy_was_sent() -> None:
    admitted = [(10.0, 10.1, "s.a"), (10.5, 10.6, "s.b")]
    overlapping = Timeline(admitted, [(10.45, 10.55), (11.0, 11.1)])
    assert false_sold_out(overlapping) == []  # answered after the last admit was sent
    early = Timeline(admitted, [(10.2, 10.3), (11.0, 11.1)])
    assert false_sold_out(early) == [(10.2, 10.3)]
    assert false_sold_out(Timeline([], [(1.0, 2.0)])) == []


def _ours(marker: Path) -> list[int]:
    """Processes whose command line names *marker* (every one the trial starts does)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if str(marker).encode() in cmd:
            found.append(int(entry.name))
    return found


def _trial(out: Path, redis_binary: str | None) -> list[str]:
    argv = [sys.executable, "-m", "loadtest.cluster_trial", *SMALL, "--out", str(out)]
    return argv + (["--server", redis_binary] if redis_binary else [])


@pytest.mark.cluster
@pytest.mark.multiprocess
def test_the_trial_small_passes_and_leaves_nothing(
    tmp_path: Path, redis_binary: str | None
) -> None:
    out = tmp_path / "trial"
    done = subprocess.run(
        _trial(out, redis_binary), cwd=ROOT, capture_output=True, text=True, timeout=110
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    lines = done.stdout.splitlines()
    for name in CHECKS:
        assert any(line.strip().startswith(f"PASS {name}:") for line in lines), name
    assert not any(line.strip().startswith("FAIL") for line in lines), done.stdout
    assert "cluster-trial: OK: every check passed" in lines
    placed = [line for line in lines if line.strip().startswith("bucket ")]
    assert len(placed) == 3 and len({line.split("->")[1] for line in placed}) == 3
    assert (out / "orders.db").exists() and list((out / "timeline").glob("*.jsonl"))
    assert _ours(out) == []


@pytest.mark.cluster
@pytest.mark.multiprocess
def test_ctrl_c_during_the_crowd_stops_everything(tmp_path: Path, redis_binary: str | None) -> None:
    out = tmp_path / "trial"
    with (tmp_path / "trial.log").open("w") as log:
        proc = subprocess.Popen(
            _trial(out, redis_binary), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            wait_for(lambda: (out / "locust-gw2.log").exists(), 60, "the crowd to start")
            assert len(_ours(out)) >= 6  # 3 nodes, 2 gateways, a worker, the crowds
            proc.send_signal(signal.SIGINT)
            code = proc.wait(90)
        finally:
            stop_group(proc, signal.SIGKILL, 10)
    text = (tmp_path / "trial.log").read_text()
    assert code == 130, text[-3000:]
    assert "interrupted; everything it started is stopped" in text
    wait_for(lambda: _ours(out) == [], 10, "every process it started to be gone")
