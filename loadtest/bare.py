"""The benchmark's yardstick: a bare aiohttp + uvloop endpoint, nothing else.

    python -m loadtest.bare [--host 127.0.0.1] --port P [--processes N]

Same process model as ``seckill serve``: with N = 1 the app runs in this
process; with N > 1 this process spawns N children that share the port
through SO_REUSEPORT (backlog 4096, like the gateway). One route,
``POST /api/v1/sales/{sale_id}/orders``, answers 202 with a pre-encoded JSON
body shaped like the gateway's order (and a ``Location``), plus
``GET /healthz``. No middleware, no Redis, no body parsing: what is left is
the cost of aiohttp's HTTP handling on this machine, which is what
``ratio_to_bare`` divides by. SIGTERM/SIGINT stop it; children die with the
parent (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
from types import FrameType

import uvloop
from aiohttp import web

from seckill.process.procs import die_with_parent

_ORDER_ID = "bare.AAAAAAAAAAAAAAAA"
BUY_BODY = (
    b'{"order_id":"' + _ORDER_ID.encode() + b'","sale_id":"bare","quantity":1,"status":"queued"}'
)
BUY_HEADERS = {"Location": f"/api/v1/orders/{_ORDER_ID}"}
HEALTH_BODY = b'{"status":"ok"}'


async def buy(request: web.Request) -> web.Response:
    return web.Response(
        body=BUY_BODY, status=202, headers=BUY_HEADERS, content_type="application/json"
    )


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=HEALTH_BODY, content_type="application/json")


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/api/v1/sales/{sale_id}/orders", buy)
    app.router.add_get("/healthz", healthz)
    return app


async def run_app(host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT."""
    runner = web.AppRunner(create_app(), handle_signals=False, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_port=True, backlog=4096)
        await site.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def _child_main(host: str, port: int, parent: int) -> None:
    die_with_parent(parent)
    uvloop.run(run_app(host, port))


def supervise(host: str, port: int, processes: int) -> int:
    """Spawn *processes* children on one port; stop them all on a signal or
    as soon as one of them dies (a yardstick with a missing process would
    measure the wrong thing)."""
    stopping = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    ctx = multiprocessing.get_context("spawn")
    children = [
        ctx.Process(target=_child_main, args=(host, port, os.getpid()), name=f"bare-{i}")
        for i in range(processes)
    ]
    for child in children:
        child.start()
    code = 0
    try:
        while not stopping:
            done = multiprocessing.connection.wait([c.sentinel for c in children], timeout=0.5)
            if done and not stopping:
                print("bare: a child process died; stopping", file=sys.stderr)
                code = 1
                break
    finally:
        for child in children:
            if child.exitcode is None and child.pid is not None:
                os.kill(child.pid, signal.SIGTERM)
        for child in children:
            child.join(10)
            if child.exitcode is None:
                child.kill()
                child.join()
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bare", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--processes", type=int, default=1)
    args = parser.parse_args(argv)
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    if args.processes == 1:
        uvloop.run(run_app(args.host, args.port))
        return 0
    return supervise(args.host, args.port, args.processes)


if __name__ == "__main__":
    sys.exit(main())
