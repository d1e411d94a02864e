"""``python -m loadtest.admit_cpu``: Valkey's CPU per admission, batched and
not, in one run (docs/performance.md, "Batched admission")."""

from __future__ import annotations

import re
import subprocess
import sys

from loadtest.bench import ROOT

LINE = re.compile(
    r"^admit_cpu batch=(\d+) crowd=8 buys=400 rounds=1 valkey_us_per_admit=[\d.]+ "
    r"\([\d.]+-[\d.]+\) client_us_per_admit=[\d.]+ \([\d.]+-[\d.]+\)$"
)


def test_one_line_per_setting() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "loadtest.admit_cpu",
         "--crowd", "8", "--buys", "400", "--rounds", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [LINE.match(x).group(1) for x in lines if LINE.match(x)] == ["1", "64"], done.stdout


def test_bad_batches_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "loadtest.admit_cpu", "--batches", "x"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "--batches" in done.stderr
