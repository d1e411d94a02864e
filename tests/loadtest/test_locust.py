"""The locust crowd (loadtest/locustfile.py) against a real two-process gateway.

locust is run as a subprocess, never imported here: it monkey-patches the
whole interpreter with gevent.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync

from tests.helpers.api import ADMIN, ADMIN_TOKEN
from tests.helpers.gateway import Gateway, wait_for

pytestmark = pytest.mark.multiprocess

ROOT = Path(__file__).resolve().parents[2]
LOCUSTFILE = ROOT / "loadtest" / "locustfile.py"
STOCK = 30
MALFORMED_NAMES = {
    "malformed: 400 (bad_json)",
    "malformed: 400 (bad_quantity)",
    "malformed: 401 (no_identity)",
}


@dataclass(frozen=True)
class LocustRun:
    code: int
    output: str
    stats: dict[str, dict[str, str]]  # locust_stats.csv by name

    def count(self, name: str) -> int:
        return int(self.stats[name]["Request Count"]) if name in self.stats else 0

    def failures(self) -> int:
        return int(self.stats["Aggregated"]["Failure Count"])


def locust(url: str, sale: str, out: Path, *args: str, **env: str) -> LocustRun:
    """A headless spike run, bounded: the shape ends it once the crowd is gone,
    ``--run-time`` caps it, and the whole process group dies on the way out."""
    cmd = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", url,
        "--csv", str(out / "locust"), "--only-summary", "--run-time", "30s", *args,
    ]  # fmt: skip
    run_env = {
        **os.environ,
        "LOADTEST_SALE": sale,
        "LOADTEST_SHAPE": "spike",
        "LOADTEST_RAMP": "1",
        "LOADTEST_HOLD": "20",
        **env,
    }
    proc = subprocess.Popen(
        cmd,
        env=run_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=60)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    with (out / "locust_stats.csv").open(newline="") as f:
        stats = {row["Name"]: row for row in csv.DictReader(f)}
    return LocustRun(proc.returncode, output, stats)


def admin(url: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
    req = urllib.request.Request(
        f"{url}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def gateway(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """Two gateway processes on the session's Redis (flushed), SQLite sink in a tmp dir."""
    with redis_sync.Redis.from_url(redis_url) as flush:
        flush.flushall()
    data = tmp_path_factory.mktemp("loadtest-gw")
    with Gateway("--processes", "2", "--redis-url", redis_url, "--data-dir", str(data)) as gw:
        gw.data_dir = data
        gw.wait_ready()
        yield gw
        assert gw.stop() == 0


@pytest.fixture(scope="module")
def crowd(gateway: Gateway, tmp_path_factory: pytest.TempPathFactory) -> LocustRun:
    """50 customers over 2 locust processes at a sale of 30 units, drained."""
    admin(gateway.url, "PUT", "/admin/v1/sales/lt-crowd", {"stock": STOCK})
    out = tmp_path_factory.mktemp("locust-crowd")
    run = locust(gateway.url, "lt-crowd", out, "--processes", "2", LOADTEST_USERS="50")

    def drained() -> bool:
        sale = admin(gateway.url, "GET", "/admin/v1/sales/lt-crowd")
        return bool(sale["backlog"] == 0 and sale["orders"]["queued"] == 0)

    wait_for(drained, 30, "the order backlog to drain")
    return run


def test_the_crowd_sells_out_exactly_without_failures(crowd: LocustRun, gateway: Gateway) -> None:
    assert crowd.code == 0, crowd.output
    assert crowd.failures() == 0, crowd.output
    assert crowd.count("buy: admitted") == STOCK
    assert crowd.count("order: confirmed") == STOCK  # every buyer followed its order
    # only outcomes the contract allows, each under its own name
    allowed = {"buy: admitted", "buy: sold_out", "buy: limit_reached", "buy: rate_limited"}
    allowed |= {"buy: overloaded", "order: queued", "order: confirmed"}
    allowed |= {"sale: active", "sale: sold_out", "Aggregated"}
    assert set(crowd.stats) <= allowed, sorted(crowd.stats)
    sale = admin(gateway.url, "GET", "/admin/v1/sales/lt-crowd")
    assert sale["stock_left"] == 0
    assert sale["orders"] == {
        "queued": 0,
        "confirmed": STOCK,
        "failed": 0,
        "cancelled": 0,
        "undetermined": 0,
        "paid": 0,
        "expired": 0,
    }


def test_the_invariant_checker_passes_after_the_crowd(
    crowd: LocustRun, gateway: Gateway, redis_url: str
) -> None:
    sink = f"sqlite:///{gateway.data_dir.resolve() / 'orders.db'}"
    cmd = [
        sys.executable, "-m", "loadtest.check", "--url", gateway.url, "--sale", "lt-crowd",
        "--redis-url", redis_url, "--sink", sink, "--require-drained",
    ]  # fmt: skip
    done = subprocess.run(
        cmd,
        env={**os.environ, "SECKILL_ADMIN_TOKEN": ADMIN_TOKEN},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines and all(line.startswith("PASS ") for line in lines), done.stdout


def test_malformed_buys_are_named_4xx_outcomes_not_failures(
    gateway: Gateway, tmp_path: Path
) -> None:
    admin(gateway.url, "PUT", "/admin/v1/sales/lt-bad", {"stock": 1000})
    run = locust(
        gateway.url,
        "lt-bad",
        tmp_path,
        LOADTEST_USERS="20",
        LOADTEST_RAMP="0",
        LOADTEST_ATTEMPTS="3",
        LOADTEST_MALFORMED="1",
    )
    assert run.code == 0, run.output
    assert run.failures() == 0, run.output
    names = set(run.stats) - {"Aggregated", "sale: active"}
    assert names <= MALFORMED_NAMES, sorted(names)
    assert sum(run.count(name) for name in names) >= 20 * 3
    assert admin(gateway.url, "GET", "/admin/v1/sales/lt-bad")["stock_left"] == 1000


def test_a_missing_sale_is_a_failure(gateway: Gateway, tmp_path: Path) -> None:
    run = locust(gateway.url, "lt-nowhere", tmp_path, LOADTEST_USERS="3", LOADTEST_RAMP="0")
    assert run.code == 1, run.output
    assert run.stats["sale: sale_not_found"]["Failure Count"] != "0"
    assert run.failures() == run.count("Aggregated")


def test_the_crowd_pays_a_share_and_the_checker_verifies_the_books_after_the_window(
    gateway: Gateway, redis_url: str, tmp_path: Path
) -> None:
    """Issue 15: LOADTEST_PAY_SHARE of the confirmed orders paid by the crowd;
    the rest expire after the 2 s window; the checker, waiting for the window
    (--wait-drained), finds every order paid or expired and the books exact."""
    admin(gateway.url, "PUT", "/admin/v1/sales/lt-pay", {"stock": 20, "pay_window_s": 2})
    run = locust(
        gateway.url,
        "lt-pay",
        tmp_path,
        LOADTEST_USERS="30",
        LOADTEST_PAY_SHARE="0.5",
        LOADTEST_ADMIN_TOKEN=ADMIN_TOKEN,
    )
    assert run.code == 0, run.output
    assert run.failures() == 0, run.output
    sink = f"sqlite:///{gateway.data_dir.resolve() / 'orders.db'}"
    cmd = [
        sys.executable, "-m", "loadtest.check", "--url", gateway.url, "--sale", "lt-pay",
        "--redis-url", redis_url, "--sink", sink, "--wait-drained", "30",
    ]  # fmt: skip
    done = subprocess.run(
        cmd,
        env={**os.environ, "SECKILL_ADMIN_TOKEN": ADMIN_TOKEN},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS pay_window_settled" in done.stdout, done.stdout
    assert "PASS sink_statuses_match" in done.stdout, done.stdout
    sale = admin(gateway.url, "GET", "/admin/v1/sales/lt-pay")
    orders = sale["orders"]
    assert orders["paid"] == run.count("pay: paid") > 0
    assert orders["confirmed"] == orders["queued"] == 0
    assert orders["paid"] + orders["expired"] == run.count("buy: admitted")
    assert sale["stock_left"] == 20 - orders["paid"]
