"""``seckill demo`` end to end: a real gateway (2 processes, embedded Valkey), a
crowd, the drain, and every invariant checked."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

NAMES = (
    "never_oversold",
    "per_user_limit",
    "every_order_final",
    "counts_consistent",
    "sink_exactly_once",
    "sink_within_sold",
    "sink_statuses_match",  # issue 15: the sink's status column = Redis's
    "crowd_matches_redis",
)


def run_demo(*args: str, timeout: float = 90) -> tuple[int, str, str]:
    """The demo as a subprocess; on a timeout it gets SIGTERM, so it stops its gateway."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SECKILL_")}
    if os.environ.get("SECKILL_TEST_REDIS_SERVER"):  # the server this test session runs
        env["SECKILL_REDIS_SERVER"] = os.environ["SECKILL_TEST_REDIS_SERVER"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "seckill", "demo", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            out, err = proc.communicate(timeout=45)
        finally:
            proc.kill()
        raise AssertionError(f"seckill demo took over {timeout}s:\n{out}\n{err}") from None
    return proc.returncode, out, err


@pytest.mark.multiprocess
def test_demo_sells_exactly_the_stock_and_every_invariant_holds() -> None:
    code, out, err = run_demo("--stock", "50", "--customers", "300", "--processes", "2")
    assert code == 0, out + err
    assert re.search(r"^  customers\s+300$", out, re.M), out
    assert re.search(r"^  admitted\s+50 orders, 50 of 50 units$", out, re.M), out
    assert re.search(r"^  rejected\s+sold_out 250$", out, re.M), out
    assert re.search(r"^  orders\s+confirmed 50, failed 0$", out, re.M), out
    assert re.search(r"^  time to sell out\s+\d+\.\d\d s", out, re.M), out
    assert re.search(r"^  time to drain\s+\d+\.\d\d s", out, re.M), out
    verdicts = re.findall(r"^  (PASS|FAIL) (\w+): ", out, re.M)
    assert verdicts == [("PASS", name) for name in NAMES], out
    assert out.rstrip().splitlines()[-1].startswith("OK: every invariant held")
    # the temporary data dir is gone with the gateway
    data_dir = re.search(r"data in (\S+)", out)
    assert data_dir and not os.path.exists(data_dir.group(1))


def test_demo_rejects_bad_flags_with_one_line() -> None:
    code, out, err = run_demo("--customers", "0", timeout=30)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and "--customers" in err, err


@pytest.mark.multiprocess
def test_demo_on_a_sale_with_buckets() -> None:
    code, out, err = run_demo(
        "--stock", "60", "--customers", "300", "--processes", "2", "--buckets", "3"
    )
    assert code == 0, out + err
    assert re.search(r"^  admitted\s+60 orders, 60 of 60 units$", out, re.M), out
    assert re.search(r"^  rejected\s+sold_out 240$", out, re.M), out
    verdicts = dict((name, v) for v, name in re.findall(r"^  (PASS|FAIL) (\w+): ", out, re.M))
    assert set(verdicts) == {*NAMES, "buckets_conserve", "user_in_one_bucket", "bucket_counts"}
    assert set(verdicts.values()) == {"PASS"}, out


@pytest.mark.multiprocess
@pytest.mark.cluster
def test_demo_on_a_redis_cluster_with_buckets(cluster_url: str) -> None:
    code, out, err = run_demo(
        "--stock", "60", "--customers", "300", "--processes", "2", "--buckets", "3",
        "--redis-url", cluster_url,
    )  # fmt: skip
    assert code == 0, out + err
    assert re.search(r"^  admitted\s+60 orders, 60 of 60 units$", out, re.M), out
    assert re.search(r"^  rejected\s+sold_out 240$", out, re.M), out
    assert "redis+cluster://" in out, out
    verdicts = re.findall(r"^  (PASS|FAIL) (\w+): ", out, re.M)
    assert verdicts and all(v == "PASS" for v, _ in verdicts), out


def test_demo_refuses_a_bad_redis_url() -> None:
    code, out, err = run_demo("--redis-url", "http://nowhere:1", timeout=60)
    assert code == 2, out + err
    assert err.count("\n") == 1 and "--redis-url" in err, err
