"""``seckill dev-cluster``: a local cluster in the foreground that prints its URL,
serves every slot, and stops every node it started on SIGTERM."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from seckill.process.procs import alive, stop_group
from tests.helpers.cli import ROOT, assert_one_line_error, run_module

pytestmark = pytest.mark.cluster


def read_line(proc: subprocess.Popen[str], within: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], within)
    assert ready, f"no line within {within}s"
    return proc.stdout.readline().strip()


def test_dev_cluster_prints_its_url_and_stops_its_nodes(
    tmp_path: Path, redis_binary: str | None
) -> None:
    args = ["--nodes", "3", "--dir", str(tmp_path)]
    if redis_binary:
        args += ["--server", redis_binary]
    proc = subprocess.Popen(
        [sys.executable, "-m", "seckill", "dev-cluster", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("SECKILL_")},
    )
    try:
        started = time.monotonic()
        url = read_line(proc, 30)
        assert time.monotonic() - started < 15
        assert re.fullmatch(r"redis\+cluster://(127\.0\.0\.1:\d+,){2}127\.0\.0\.1:\d+", url), url
        first = url.removeprefix("redis+cluster://").split(",")[0]
        host, port = first.split(":")
        client = redis.RedisCluster(host=host, port=int(port), decode_responses=True)
        try:
            for i in range(30):  # keys on every primary
                client.set(f"k{i}", i)
            assert {client.get_node_from_key(f"k{i}").port for i in range(30)} == {
                int(a.split(":")[1]) for a in url.removeprefix("redis+cluster://").split(",")
            }
        finally:
            client.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        assert proc.stderr is not None
        pids = [int(p) for p in re.findall(r" pid (\d+) ", proc.stderr.read())]
        assert len(pids) == 3
        deadline = time.monotonic() + 10
        while any(alive(p) for p in pids):
            assert time.monotonic() < deadline, "a node outlived dev-cluster"
            time.sleep(0.05)
    finally:
        stop_group(proc, signal.SIGTERM, 10)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def test_dev_cluster_refuses_a_bad_server_and_a_used_dir(tmp_path: Path) -> None:
    result = run_module("seckill", "dev-cluster", "--server", str(tmp_path / "nope"))
    assert_one_line_error(result, "--server")
    result = run_module("seckill", "dev-cluster", "--nodes", "0")
    assert_one_line_error(result, "--nodes")
    (tmp_path / "node-0").mkdir()
    (tmp_path / "node-0" / "nodes.conf").write_text("")
    result = run_module("seckill", "dev-cluster", "--dir", str(tmp_path))
    assert result.returncode == 1
    assert "holds a cluster node already" in result.stderr
