"""Running ``seckill serve`` as a real subprocess in tests, always cleaned up."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from seckill.process.procs import free_port
from tests.helpers.api import ADMIN_TOKEN


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class Gateway:
    """``seckill serve`` in its own process group; ``stop()`` or ``kill()`` it."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._own_dir: str | None = None
        if "--data-dir" not in args:  # never write into the working tree
            self._own_dir = tempfile.mkdtemp(prefix="seckill-gw-")
            args = (*args, "--data-dir", self._own_dir)
        self.data_dir = Path(args[args.index("--data-dir") + 1])
        full_env = {**os.environ, "SECKILL_ADMIN_TOKEN": ADMIN_TOKEN, **(env or {})}
        # its output goes to a file, not a pipe nobody reads (a full pipe blocks it)
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 -- closed by kill()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "seckill", "serve", "--port", str(self.port), *args],
            env=full_env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        """Everything the gateway printed so far."""
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 60) -> Gateway:
        def up() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited {self.proc.returncode}: {self.output()}")
            return self.ready()

        wait_for(up, timeout, "the gateway to be ready")
        return self

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, wait; the return code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the whole process group (idempotent)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.wait(10)
        self.log.close()
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


async def blast(
    url: str,
    sale: str,
    seconds: float,
    concurrency: int = 64,
    user: str | None = None,
    prefix: str = "b",
) -> list[tuple[float, int]]:
    """Buy as fast as *concurrency* connections allow for *seconds*.

    Every request has a fresh user id (``<prefix><n>``) unless *user* is given.
    Returns (seconds since start, status) per answer. Bounded in time and to
    127.0.0.1 by the caller's URL.
    """
    import aiohttp  # local: only the load tests need it

    results: list[tuple[float, int]] = []
    counter = iter(range(10**9))
    start = time.monotonic()
    deadline = start + seconds
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as session:

        async def worker() -> None:
            while (now := time.monotonic()) < deadline:
                uid = user or f"{prefix}{next(counter)}"
                async with session.post(
                    f"{url}/api/v1/sales/{sale}/orders", headers={"X-User-Id": uid}
                ) as resp:
                    await resp.read()
                    results.append((now - start, resp.status))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


async def until(condition, within: float = 10.0, what: str = "the condition") -> None:  # type: ignore[no-untyped-def]
    """Poll *condition* (sync or async) until it holds; fail after *within* seconds."""
    deadline = time.monotonic() + within
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.01)
