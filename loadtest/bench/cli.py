"""``python -m loadtest.bench``: the flags, the environment (``BENCH_DURATION``,
``BENCH_QUICK``) and ``main()``, which turns every way a run can end into
its exit code: 0 when every measurement ran, 2 with one ``bench: error:``
line, 130 on Ctrl-C or SIGTERM (everything it started stopped first)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from loadtest.bench import ROOT
from loadtest.bench.console import BenchError, fail, say
from loadtest.bench.machine import machine_info
from loadtest.bench.report import print_summary, write_report
from loadtest.bench.runner import Bench, Options
from loadtest.bench.scenarios import SCENARIOS
from loadtest.bench.shards import DEFAULT_SHARDS, SHARDS
from loadtest.bench.wrk import THREADS, wrk_binary


def _csv(
    kind: Callable[[str], Any], allowed: tuple[Any, ...] | None = None
) -> Callable[[str], Any]:
    def parse(text: str) -> tuple[Any, ...]:
        try:
            items = tuple(kind(x.strip()) for x in text.split(",") if x.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a comma-separated list: {text!r}") from None
        if not items:
            raise argparse.ArgumentTypeError("empty list")
        if allowed is not None:
            unknown = [x for x in items if x not in allowed]
            if unknown:
                raise argparse.ArgumentTypeError(
                    f"unknown {unknown}; choose from {','.join(map(str, allowed))}"
                )
        return items

    return parse


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number of seconds: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_args(argv: list[str] | None) -> Options:
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench",
        description="The seckill benchmark (docs/API.md §8; docs/performance.md explains it).",
    )
    parser.add_argument(
        "--scenarios",
        type=_csv(str, (*SCENARIOS, SHARDS)),
        default=SCENARIOS,
        help="comma-separated; bare is always measured (default: all but shards, which is opt-in)",
    )
    parser.add_argument(
        "--shards",
        type=_csv(int),
        default=None,
        help="primaries of the local clusters of the shards scenario (implies it; default 1,3)",
    )
    parser.add_argument("--processes", type=_csv(int, (1, 2)), default=(1, 2))
    parser.add_argument("--connections", type=_csv(int), default=(64, 256))
    parser.add_argument(
        "--duration",
        type=_positive_int,
        default=None,
        help="measured seconds per run (env BENCH_DURATION; default 10, 1 with BENCH_QUICK=1)",
    )
    parser.add_argument("--warmup", type=_positive_int, default=None, help="default 2 (quick: 1)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "var" / "bench")
    parser.add_argument(
        "--admit-batch",
        type=_positive_int,
        default=None,
        help="the gateways' --admit-batch (1 = one admit.lua call per buy; default: theirs)",
    )
    args = parser.parse_args(argv)
    duration = args.duration
    if duration is None:
        env = os.environ.get("BENCH_DURATION")
        try:
            duration = _positive_int(env) if env else (1 if quick else 10)
        except argparse.ArgumentTypeError as exc:
            parser.error(f"BENCH_DURATION: {exc}")
    if any(c < THREADS for c in args.connections):
        parser.error(f"--connections must be at least {THREADS} (wrk -t{THREADS})")
    scenarios = tuple(s for s in SCENARIOS if s in args.scenarios or s == "bare")
    shards: tuple[int, ...] = ()
    if args.shards is not None or SHARDS in args.scenarios:
        shards = tuple(dict.fromkeys(args.shards or DEFAULT_SHARDS))
        if any(not 1 <= n <= 16 for n in shards):
            parser.error("--shards: each count must be 1..16")
    return Options(
        scenarios=scenarios,
        processes=tuple(sorted(set(args.processes))),
        connections=tuple(dict.fromkeys(args.connections)),
        duration=duration,
        warmup=args.warmup or (1 if quick else 2),
        out_dir=args.out_dir,
        quick=quick,
        drain_timeout=10.0 if quick else 60.0,
        shards=shards,
        admit_batch=args.admit_batch,
    )


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # the same clean-up as Ctrl-C


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    try:
        wrk = wrk_binary()
    except BenchError as exc:
        fail(str(exc))
    signal.signal(signal.SIGTERM, _on_sigterm)
    started = datetime.now(UTC)
    machine = machine_info()
    bench = Bench(opts, wrk)
    say(
        f"{machine['nproc']} CPU(s), {machine['cpu_model']}; load {' '.join(machine['loadavg'])}; "
        f"{opts.duration}s runs after {opts.warmup}s warm-ups"
    )
    try:
        bench.run()
    except BenchError as exc:
        bench.close()
        fail(str(exc))
    except KeyboardInterrupt:
        bench.close()
        print("bench: interrupted; everything it started is stopped", file=sys.stderr)
        return 130
    finally:
        bench.close()
    print_summary(bench, write_report(bench, started, machine))
    return 0
