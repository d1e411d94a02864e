"""``make soak`` (docs/faults.md): the verdict, bad input, and a short real run."""

from __future__ import annotations

import subprocess
from dataclasses import replace

import pytest

from loadtest.soak import Sample, verdict
from tests.helpers.cli import assert_one_line_error, run_module


def samples(rss: list[float], fds: int = 100, p99: float = 20.0) -> list[Sample]:
    return [Sample(i / 2, 1000, 1.0, p99, 0, mb, 10.0 + i, fds) for i, mb in enumerate(rss)]


def test_flat_when_nothing_grows() -> None:
    result = verdict(samples([160, 161, 160, 162, 161, 160]))
    assert result.flat, result.lines
    assert result.lines[0] == "gateway RSS MB: 160.5 → 160.5 (+0.0%) flat"
    assert result.lines[-1].startswith("redis RSS MB: ")  # reported, not judged


def test_growing_rss_is_not_flat() -> None:
    result = verdict(samples([160, 165, 175, 185, 195, 205]))
    assert not result.flat
    assert result.lines[0] == "gateway RSS MB: 162.5 → 200.0 (+23.1%) GREW"


def test_a_fall_is_reported_and_is_no_finding() -> None:
    """A p99 that fell (the machine got quieter) is not growth."""
    result = verdict(samples([160] * 3, p99=40.0) + samples([160] * 3, p99=26.0))
    assert result.flat, result.lines
    assert result.lines[2] == "p99 ms: 40.0 → 26.0 (-35.0%) fell"


def test_one_noisy_interval_does_not_decide() -> None:
    noisy = samples([160] * 9)  # thirds of 3: the median of each decides
    noisy[-1] = Sample(4.5, 1000, 1.0, 90.0, 0, 160, 10, 100)  # one spike of p99
    assert verdict(noisy).flat


def test_small_absolute_moves_of_fds_and_p99_pass() -> None:
    a = samples([160] * 3, fds=20, p99=4.0)
    b = samples([160] * 3, fds=23, p99=5.5)  # +15 % fds, +37 % p99: inside the slack
    assert verdict(a + b).flat


def test_p99_that_grew_with_other_jobs_cpu_is_inconclusive() -> None:
    """On a shared machine latency follows the neighbours: a p99 that grew while
    other jobs took more CPU proves nothing either way."""
    quiet = [replace(x, others=0.2) for x in samples([160] * 3, p99=10.0)]
    busy = [replace(x, others=1.1) for x in samples([160] * 3, p99=30.0)]
    result = verdict(quiet + busy)
    assert (result.flat, result.inconclusive, result.word) == (False, True, "inconclusive")
    assert result.lines[2] == (
        "p99 ms: 10.0 → 30.0 (+200.0%) grew with other jobs' CPU (0.20 → 1.10 cores): inconclusive"
    )
    # the same growth on a machine as quiet as before is growth
    calm = [replace(x, others=0.2) for x in busy]
    result = verdict(quiet + calm)
    assert (result.flat, result.inconclusive, result.word) == (False, False, "NOT flat")
    # and RSS growth is growth whatever the neighbours do
    leak = [replace(x, gateway_rss_mb=200.0) for x in busy]
    assert verdict(quiet + leak).word == "NOT flat"


def test_too_few_samples() -> None:
    assert not verdict(samples([160, 160])).flat


def soak(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return run_module("loadtest.soak", *args, timeout=timeout)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--minutes", "1", "--interval", "30"], "fewer than 3 samples"),
        (["--minutes", "0"], "--minutes"),
        (["--rate", "0"], "--rate"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], says: str) -> None:
    done = soak(*args)
    assert_one_line_error(done, says, tool="soak")


@pytest.mark.multiprocess
def test_a_short_soak_samples_and_judges() -> None:
    """12 s at 200 req/s, a sample every 3 s: the table has a row per sample
    with live figures, and a verdict line."""
    done = soak("--minutes", "0.2", "--interval", "3", "--rate", "200", timeout=90)
    assert done.returncode in (0, 1), done.stdout + done.stderr
    lines = done.stdout.splitlines()
    rows = [line.split() for line in lines[2:] if line.strip() and line.split()[0][0].isdigit()]
    assert len(rows) >= 3, done.stdout
    for r in rows:
        rps, errors, gw_rss, fds = float(r[1]), int(r[4]), float(r[5]), int(r[7])
        assert 100 < rps < 300 and errors == 0 and gw_rss > 20 and fds > 5, done.stdout
        assert 0 < int(r[8]) < fds, done.stdout  # some of the fds are connections to Redis
        assert float(r[9]) >= 0 and float(r[10]) >= 0, done.stdout  # load, others' cores
    assert lines[-1].startswith("verdict: "), done.stdout
