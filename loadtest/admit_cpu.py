"""Valkey's CPU per admission, with and without batched admission: admit.lua
driven by :class:`seckill.redis.scripts.Scripts` alone — no HTTP, no delivery —
against an embedded Valkey (AOF, ``appendfsync always`` as ``serve``
runs it), the batch settings alternating in the same run.

    python -m loadtest.admit_cpu [--batches 1,64] [--crowd 64] [--buys 40000] [--rounds 3]

Each round admits ``--buys`` buys per setting, ``--crowd`` at once (one
event-loop turn), every buy a new user of a sale that never runs out, and
reads the server's utime + stime from /proc around it. Prints one line per
setting: the median over the rounds of Valkey's and this process's CPU µs
per admission, and the spread (min–max). Exit 0; 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from seckill.process.embedded import EmbeddedRedis
from seckill.process.procs import stat_fields
from seckill.redis.client import connect
from seckill.redis.scripts import Admit, Scripts

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = stat_fields(pid)
    if fields is None:
        raise SystemExit(f"admit_cpu: the server (pid {pid}) is gone")
    return (int(fields[11]) + int(fields[12])) / TICK


async def one_round(
    url: str, pid: int, batch: int, crowd: int, buys: int, tag: str
) -> tuple[float, float]:
    clients = connect(url)
    try:
        scripts = Scripts(clients, admit_batch=batch)
        sale = f"cpu{tag}"
        await scripts.sale_put(sale, {"stock": 10**9})
        await scripts.admit(sale, "warm", 1)
        server0, own0 = cpu_s(pid), time.process_time()
        n = 0
        while n < buys:
            results = await asyncio.gather(
                *(scripts.admit(sale, f"u{n + i}", 1) for i in range(crowd))
            )
            if any(r.outcome is not Admit.OK for r in results):
                raise SystemExit(f"admit_cpu: a buy was not admitted: {results[0]}")
            n += crowd
        server, own = cpu_s(pid) - server0, time.process_time() - own0
        return server * 1e6 / n, own * 1e6 / n
    finally:
        await clients.aclose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.admit_cpu")
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--crowd", type=int, default=64)
    parser.add_argument("--buys", type=int, default=40_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fsync", choices=("always", "everysec"), default="always")
    args = parser.parse_args(argv)
    try:
        batches = [int(b) for b in args.batches.split(",")]
    except ValueError:
        parser.error("--batches: comma-separated integers")
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    with tempfile.TemporaryDirectory(prefix="admit-cpu-") as tmp:
        server = EmbeddedRedis(Path(tmp), fsync=args.fsync)
        url = server.start()
        try:
            assert server.process is not None
            pid = server.process.pid
            figures: dict[int, list[tuple[float, float]]] = {b: [] for b in batches}
            for r in range(args.rounds):
                for b in batches:
                    figures[b].append(
                        asyncio.run(one_round(url, pid, b, args.crowd, args.buys, f"{r}b{b}"))
                    )
        finally:
            server.stop()
    for b in batches:
        valkey = [v for v, _ in figures[b]]
        client = [c for _, c in figures[b]]
        print(
            f"admit_cpu batch={b} crowd={args.crowd} buys={args.buys} rounds={args.rounds}"
            f" valkey_us_per_admit={statistics.median(valkey):.1f}"
            f" ({min(valkey):.1f}-{max(valkey):.1f})"
            f" client_us_per_admit={statistics.median(client):.1f}"
            f" ({min(client):.1f}-{max(client):.1f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
