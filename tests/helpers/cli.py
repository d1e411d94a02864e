"""Running a command-line tool of the repo as a user would (``python -m
MODULE``), and the shape of its usage errors."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_module(
    module: str,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
    keep_seckill_env: bool = False,
) -> subprocess.CompletedProcess[str]:
    """``python -m MODULE ARGS`` from the repo root, its output captured. The
    shell's ``SECKILL_*`` variables are dropped (they would configure it)
    unless *keep_seckill_env*; *env* is added on top."""
    base = {k: v for k, v in os.environ.items() if keep_seckill_env or not k.startswith("SECKILL_")}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**base, **(env or {})},
    )


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], fragment: str, tool: str = "seckill"
) -> str:
    """Exit 2 with one ``TOOL: error:`` line on stderr that holds *fragment*; the line."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{tool}: error: ") and fragment in lines[0], lines[0]
    return lines[0]
