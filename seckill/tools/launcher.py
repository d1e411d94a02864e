"""The one way to start ``seckill serve`` (or another server) as a child process.

``make run``, the demo, the load test, the benchmark and the tests all start
their gateway through :class:`GatewayProcess`, so each of them gets the same
rules:

- **its own session** (process group): :meth:`ChildProcess.stop` sends SIGTERM
  to the leader, waits, then SIGKILLs the group, so nothing it started (the
  supervisor's children, the embedded Redis) outlives it;
- **it dies with its parent** (PR_SET_PDEATHSIG): a tool killed outright
  leaves no gateway behind;
- **one environment policy** (:func:`gateway_env`);
- **ready** when ``/readyz`` answers 200 and the "serving on" line is out (it
  names the Redis the gateway uses);
- **output to a file**, never a pipe nobody reads (a full pipe blocks the
  gateway): ``log_path``, or a file in the launcher's own temporary directory.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any, Self

from seckill.process.embedded import read_password
from seckill.process.procs import die_with_parent, free_port, stop_group
from seckill.process.server import SERVING_RE
from seckill.tools.admin_client import request

HOST = "127.0.0.1"
#: SECKILL_* variables a launched gateway still sees: how it logs and which
#: binary it embeds never point it at anyone else's data.
INHERITED = frozenset({"SECKILL_LOG_LEVEL", "SECKILL_REDIS_SERVER"})
#: seconds to wait for a gateway to be ready, and for it to stop on SIGTERM
#: (a drain takes up to 10 s for requests plus 10 s for deliveries)
START_TIMEOUT, STOP_TIMEOUT = 60.0, 30.0


class LaunchError(RuntimeError):
    """The child did not start, or stopped while we waited; one line, with
    the last lines of its output."""


def gateway_env(
    extra: Mapping[str, str] | None = None,
    *,
    operator: bool = False,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a launched gateway.

    ``SECKILL_*`` variables are an operator's configuration of *their*
    gateway. A tool that starts a gateway for its own purpose (the demo, the
    load test, the benchmark, the tests) must not be pointed elsewhere by them
    — a ``SECKILL_REDIS_URL`` left in the shell would make the demo sell on
    that Redis — so they are dropped, except :data:`INHERITED`. With
    ``operator=True`` (``make run``: the operator's own gateway) they are all
    kept. *extra* comes last and wins; what a tool means the gateway to use it
    passes there or as flags.
    """
    env = dict(os.environ if base is None else base)
    if not operator:
        env = {k: v for k, v in env.items() if not k.startswith("SECKILL_") or k in INHERITED}
    env["PYTHONUNBUFFERED"] = "1"  # the log file is current
    env.update(extra or {})
    return env


class ChildProcess:
    """A server in its own session, dying with this process, its output in a file.

    Without *log_path* the output goes to ``<name>.log`` in *own_dir*, a
    temporary directory of the launcher's own (made when not given), which
    :meth:`kill` removes. ``terminal=True`` lets it write to this process's
    terminal instead (``make run``); :meth:`output` is then empty.

    The parent-death signal is tied to the thread that starts the child:
    start it from a thread that lives as long as the child should.
    """

    def __init__(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str],
        name: str = "server",
        log_path: Path | None = None,
        cwd: Path | None = None,
        terminal: bool = False,
        own_dir: Path | None = None,
    ) -> None:
        self.name = name
        self.own_dir = own_dir
        self.log_path: Path | None = None
        self._log: IO[bytes] | None = None
        if not terminal:
            if log_path is None:
                if self.own_dir is None:
                    self.own_dir = Path(tempfile.mkdtemp(prefix=f"seckill-{name}-"))
                log_path = self.own_dir / f"{name}.log"
            log_path.parent.mkdir(parents=True, exist_ok=True)
            self.log_path = log_path
            self._log = log_path.open("wb")
        out: Any = None if terminal else self._log
        self.proc = subprocess.Popen(
            argv,
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=None if terminal else subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=functools.partial(die_with_parent, os.getpid()),
        )
        self.returncode: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def running(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        """Everything it wrote so far ('' when it writes to the terminal)."""
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, lines: int = 5) -> str:
        shown = [line for line in self.output().splitlines() if line.strip()][-lines:]
        return " | ".join(shown) if shown else "no output"

    def wait_until(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll *condition* until it holds; LaunchError when the process exits
        first or *timeout* seconds pass."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.proc.poll() is not None:
                raise LaunchError(
                    f"{self.name} exited with code {self.proc.returncode} before {what}: "
                    f"{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise LaunchError(f"{self.name}: no {what} after {timeout:.0f}s: {self.tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = STOP_TIMEOUT, sig: int = signal.SIGTERM) -> int | None:
        """*sig* (SIGTERM: it drains), wait up to *timeout* s, then SIGKILL the
        group; its exit code (None: it had to be killed). Idempotent."""
        if self.returncode is None:
            self.returncode = stop_group(self.proc, sig, timeout)
        self.kill()
        return self.returncode

    def kill(self) -> None:
        """SIGKILL the whole group, close the log and remove our own temporary
        directory (idempotent)."""
        stop_group(self.proc, signal.SIGKILL, 10)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.own_dir is not None:
            shutil.rmtree(self.own_dir, ignore_errors=True)
            self.own_dir = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()


class GatewayProcess(ChildProcess):
    """``seckill serve [flags]`` on *host* (127.0.0.1) and *port* (None: a free one).

    A tool's gateway (the default) gets :func:`gateway_env` of *env* and,
    without ``--data-dir`` in *flags*, a temporary data dir (embedded Redis,
    SQLite sink) that :meth:`kill` removes: it never writes into the working
    tree. ``operator=True`` (``make run``) starts the operator's own gateway:
    their ``SECKILL_*`` variables, their data dir. *admin_token* None
    generates one.
    """

    def __init__(
        self,
        *flags: str,
        name: str = "gateway",
        host: str = HOST,
        port: int | None = None,
        admin_token: str | None = None,
        env: Mapping[str, str] | None = None,
        operator: bool = False,
        log_path: Path | None = None,
        cwd: Path | None = None,
        terminal: bool = False,
    ) -> None:
        self.host = host
        self.port = free_port(HOST) if port is None else port
        self.url = f"http://{HOST if host in ('0.0.0.0', '') else host}:{self.port}"
        self.admin_token = admin_token or secrets.token_urlsafe(24)
        self._redis_url: str | None = None
        args = list(flags)
        own_dir = None
        if "--data-dir" not in args and not operator:  # never into the working tree
            own_dir = Path(tempfile.mkdtemp(prefix="seckill-gateway-"))
            args += ["--data-dir", str(own_dir / "data")]
        data_dir = (
            args[args.index("--data-dir") + 1]
            if "--data-dir" in args
            else os.environ.get("SECKILL_DATA_DIR", "var")
        )
        self.data_dir = Path(data_dir).resolve()
        argv = [sys.executable, "-m", "seckill", "serve", "--host", host, "--port", str(self.port)]
        super().__init__(
            argv + args,
            env=gateway_env(
                {"SECKILL_ADMIN_TOKEN": self.admin_token, **(env or {})}, operator=operator
            ),
            name=name,
            log_path=log_path,
            cwd=cwd,
            terminal=terminal,
            own_dir=own_dir,
        )

    @property
    def shown_redis_url(self) -> str:
        """The Redis it serves from as its "serving on" line names it (the
        password masked): for printing. LaunchError before that line is out."""
        found = SERVING_RE.search(self.output())
        if found is None:
            raise LaunchError("the gateway has not said which Redis it uses yet")
        return found["redis_url"]

    @property
    def redis_url(self) -> str:
        """The Redis it serves from, with the embedded server's password from
        the data dir in place of the mask: for connecting (never print it)."""
        if self._redis_url is None:
            url = self.shown_redis_url
            password = read_password(self.data_dir)
            if password is not None and ":***@" in url:
                url = url.replace(":***@", f":{password}@", 1)
            self._redis_url = url
        return self._redis_url

    def ready(self) -> bool:
        """True when ``/readyz`` answers 200."""
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def serving(self) -> bool:
        """Ready, and the "serving on" line is out (always, on a terminal)."""
        return (self.log_path is None or SERVING_RE.search(self.output()) is not None) and (
            self.ready()
        )

    def wait_ready(self, timeout: float = START_TIMEOUT) -> Self:
        self.wait_until(self.serving, timeout, "readiness (/readyz 200)")
        return self

    def admin(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """``(status, JSON)`` of an admin API call with its token."""
        return request(self.url, self.admin_token, method, path, body)
