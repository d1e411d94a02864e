"""A throwaway PostgreSQL server for tests: initdb + pg_ctl on a temp dir and a free port.

Debian installs the server binaries under ``/usr/lib/postgresql/<version>/bin``
(not on PATH). initdb refuses to run as root, so as root every server command
runs as the ``postgres`` user (created by the Debian package) through
``runuser``, on a directory chowned to it. The directory comes from
``tempfile.mkdtemp`` (under /tmp, which that user can traverse) rather than
pytest's tmp_path, whose parents are private to root.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import select
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from seckill.process.procs import free_port

BINDIR_GLOB = "/usr/lib/postgresql/*/bin"

#: Tests only: a crash may lose the last commits, and that is fine.
FAST = ("-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off")


def find_bindir() -> Path | None:
    """The newest PostgreSQL server bin dir: Debian's layout first, then PATH."""
    candidates = [Path(p) for p in glob.glob(BINDIR_GLOB)]
    candidates.sort(key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.name)])
    for bindir in reversed(candidates):
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).parent
    return None


class PostgresServer:
    """``start()`` → a DSN; ``stop()`` always cleans up (fast shutdown, else SIGKILL)."""

    def __init__(self, bindir: Path, *, fast: bool = True) -> None:
        self.bindir = bindir
        self.fast = fast
        self.dir: Path | None = None
        self.port: int | None = None
        self._as: list[str] = []

    @property
    def data(self) -> Path:
        assert self.dir is not None
        return self.dir / "data"

    @property
    def logfile(self) -> Path:
        assert self.dir is not None
        return self.dir / "postgres.log"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._as, *args], capture_output=True, text=True, timeout=timeout, check=True
        )

    def start(self) -> str:
        self.dir = Path(tempfile.mkdtemp(prefix="seckill-pg-"))
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "running as root, and there is no 'postgres' user to run initdb as"
                    " (Debian's postgresql package creates it)"
                ) from None
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        try:
            self._run(
                str(self.bindir / "initdb"),
                *("-D", str(self.data), "-U", "postgres", "-A", "trust"),
                *("-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"),
            )
            for _attempt in range(3):  # the free port may be taken before we bind it
                self.port = free_port()
                if self._pg_ctl_start():
                    return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
                if "already in use" not in self._log_tail():
                    break
            raise RuntimeError(f"PostgreSQL did not start:\n{self._log_tail()}")
        except subprocess.CalledProcessError as exc:
            self.stop()
            raise RuntimeError(f"{exc.cmd[len(self._as)]} failed:\n{exc.stderr}") from None
        except BaseException:
            self.stop()
            raise

    def _pg_ctl_start(self) -> bool:
        assert self.dir is not None
        options = [
            *("-c", "listen_addresses=127.0.0.1", "-p", str(self.port)),
            *("-k", str(self.dir)),  # its unix socket, not /var/run/postgresql
            *(FAST if self.fast else ()),
        ]
        try:
            # -w: returns once the server accepts connections
            self._run(
                str(self.bindir / "pg_ctl"),
                *("-D", str(self.data), "-l", str(self.logfile), "-w", "-t", "30"),
                *("-o", " ".join(options), "start"),
            )
        except subprocess.CalledProcessError:
            return False
        return True

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return "(no server log)"

    def _pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        if self.dir is None:
            return
        pid = self._pid()
        if pid is not None:
            try:
                self._run(
                    str(self.bindir / "pg_ctl"),
                    *("-D", str(self.data), "-m", "fast", "-w", "-t", "10", "stop"),
                    timeout=20,
                )
            except (subprocess.SubprocessError, OSError):  # failed, hung, or no pg_ctl
                _kill(pid)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None


def _kill(pid: int, timeout: float = 10) -> None:
    """SIGKILL the postmaster and wait for it to be gone (its backends follow it)."""
    try:
        fd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return
    try:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        select.select([fd], [], [], timeout)  # readable once the process has exited
    finally:
        os.close(fd)
