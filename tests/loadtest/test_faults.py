"""``make faults`` (docs/faults.md): the verdict of a row, the command's bad input,
and two cheap rows run for real (no fault, and one gateway child kill -9)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from loadtest.faults import Tally, judge
from tests.helpers.cli import ROOT, assert_one_line_error, run_module
from tests.helpers.gateway import wait_for

SALE = {"stock_total": "10", "stock_left": "7"}


def tally(admitted: dict[str, int], unknown: int = 0) -> Tally:
    return Tally(admitted=admitted, answers=Counter({"202": len(admitted)}), unknown=unknown)


def order(status: str = "confirmed") -> dict[str, str]:
    return {"status": status}


def test_judge_passes_a_sink_that_holds_exactly_the_202s() -> None:
    problems, sold, in_sink, failed, ghosts = judge(
        tally({"s.a": 1, "s.b": 2}),
        {"s.a": order(), "s.b": order()},
        SALE,
        {"s.a": 1, "s.b": 2},
        2,
        [],
    )
    assert (problems, sold, in_sink, failed, ghosts) == ([], 3, 3, 0, 0)


def test_judge_fails_a_sink_that_holds_more_than_was_sold() -> None:
    """issue 12: a slow sink stored an order that was then released and sold again."""
    problems, *_ = judge(
        tally({"s.a": 1, "s.b": 2, "s.c": 1}),
        {"s.a": order(), "s.b": order(), "s.c": order("failed")},
        SALE,
        {"s.a": 1, "s.b": 2, "s.c": 1},
        3,
        [],
    )
    assert problems == ["the sink holds 4 units, 3 were sold"]


def test_judge_fails_a_202_that_never_reached_the_sink() -> None:
    problems, _, _, failed, _ = judge(
        tally({"s.a": 1, "s.b": 2, "s.c": 1}),
        {"s.a": order(), "s.b": order(), "s.c": order("failed")},
        SALE,
        {"s.a": 1, "s.b": 2},
        2,
        [],
    )
    assert failed == 1
    assert problems == ["1 order(s) answered 202 not in the sink ({'failed': 1})"]


def test_judge_fails_duplicate_rows_and_failed_checks() -> None:
    problems, *_ = judge(
        tally({"s.a": 1, "s.b": 2}),
        {"s.a": order(), "s.b": order()},
        SALE,
        {"s.a": 1, "s.b": 2},
        3,
        ["FAIL never_oversold: …"],
    )
    assert problems == ["FAIL never_oversold: …", "1 duplicate sink row(s)"]


def test_judge_allows_a_ghost_order_only_for_an_unknown_answer() -> None:
    """An order nobody got a 202 for: fine when an answer never came (the
    customer cannot know), a broken promise when every answer was definite
    (a 503 that became an order)."""
    orders = {"s.a": order(), "s.b": order(), "s.ghost": order()}
    sink = {"s.a": 1, "s.b": 1, "s.ghost": 1}
    problems, _, _, _, ghosts = judge(tally({"s.a": 1, "s.b": 1}), orders, SALE, sink, 3, [])
    assert ghosts == 1
    assert problems == [
        "1 order(s) nobody got a 202 for, but only 0 answer(s) were unknown: "
        "a refusal became an order"
    ]
    problems, *_ = judge(tally({"s.a": 1, "s.b": 1}, unknown=1), orders, SALE, sink, 3, [])
    assert problems == []


def faults(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_module("loadtest.faults", *args, timeout=timeout)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--rows", "nosuch"], "unknown row(s) nosuch"),
        (["--rows", ","], "unknown row(s) (none given)"),
        (["--stock", "5"], "--stock"),
        (["--redis-server", "/nonexistent/redis-server"], "is not a file"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], says: str) -> None:
    done = faults(*args)
    assert_one_line_error(done, says, tool="faults")
    assert done.stdout == ""


def test_list_names_every_row() -> None:
    done = faults("--list")
    assert done.returncode == 0, done.stderr
    names = [line.split()[0] for line in done.stdout.splitlines()]
    assert names == [
        "none",
        "redis-sigstop",
        "redis-kill9",
        "sink-down",
        "sink-slow",
        "sqlite-locked",
        "child-kill9",
        "gateway-kill9",
    ]


@pytest.mark.multiprocess
@pytest.mark.fault
def test_two_cheap_rows_pass_for_real(redis_binary: str | None) -> None:
    """The harness end to end: its own Redis and a 2-process gateway per row, a
    crowd, the checks; then nothing it started is left running."""
    args = ["--rows", "none,child-kill9", "--stock", "60"]
    if redis_binary:
        args += ["--redis-server", redis_binary]
    before = _servers()
    done = faults(*args, timeout=100)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split() for line in done.stdout.splitlines()[2:]]
    assert [(r[0], r[1]) for r in rows] == [("none", "PASS"), ("child-kill9", "PASS")]
    for r in rows:  # 202s > 0, sold = in sink = the stock
        assert int(r[2]) > 0 and r[5] == r[6] == "60", done.stdout
    assert _servers() == before, "a server started by the harness is still running"


@pytest.mark.multiprocess
@pytest.mark.fault
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_interrupted_mid_row_it_stops_every_server(sig: signal.Signals) -> None:
    """SIGTERM or Ctrl-C while a row runs (its sink down for 10 s): exit 130, one
    line, and no server of its left."""
    before = _servers()
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadtest.faults", "--rows", "sink-down"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("SECKILL_")},
    )
    try:
        # the harness, its Redis, the gateway and its two children: the crowd is next
        wait_for(lambda: len(_servers() - before) >= 5, 60, "the row's servers to start")
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, out + err
    assert err.splitlines()[-1] == "faults: interrupted; every server stopped"
    assert _servers() == before, "a server of the interrupted row is still running"


def _servers() -> set[int]:
    """Pids of processes that name a faults work dir in their command line or
    hold a file in one open (Valkey rewrites its title, but keeps its AOF open)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            seen = [(entry / "cmdline").read_bytes().decode(errors="replace")]
            seen += [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except OSError:
            continue
        if any("seckill-faults-" in text for text in seen):
            found.add(int(entry.name))
    return found
