"""The data dir's locks: what a ``seckill serve`` may touch in its data dir.

Taken first, before anything under the data dir is created, read or wiped
(the metrics directory, the embedded server's files, the SQLite sink): a
second ``serve`` refused here leaves the data dir untouched and exits 2.
``flock`` locks, released by the kernel when their holder dies, even by kill -9.

- With the embedded server the data dir is this gateway's alone: an
  exclusive lock on ``<data-dir>/seckill.lock``; metrics in
  ``<data-dir>/metrics/``.
- With ``--redis-url`` several gateways may share a data dir (docker-compose:
  two replicas write one SQLite sink on one volume): a shared lock on the
  same file (so no embedded-server gateway starts there meanwhile), and each
  gateway's metrics in ``<data-dir>/metrics/<host>-<port>/``, under an
  exclusive lock of their own.
"""

from __future__ import annotations

import fcntl
import socket
from pathlib import Path
from typing import IO

LOCK_FILE = "seckill.lock"


class DataDirError(RuntimeError):
    """The data dir is unusable or in use; one line for the operator."""


def lock_file(path: Path, *, exclusive: bool, in_use: str) -> IO[str]:
    """An flock on *path* (created, with its directory), taken without waiting;
    DataDirError(*in_use*) when another process holds it. Closing the file
    lets it go."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = path.open("a+")
    except OSError as exc:
        raise DataDirError(f"cannot use {path.parent}: {exc.strerror}") from None
    try:
        fcntl.flock(lock, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise DataDirError(in_use) from None
    return lock


class DataDirLock:
    """The locks of one gateway on its data dir; :meth:`close` lets them go."""

    def __init__(self, data_dir: Path, *, shared: bool, port: int) -> None:
        self.dir = data_dir.resolve()
        self._locks = [
            lock_file(
                self.dir / LOCK_FILE,
                exclusive=not shared,
                in_use=f"data dir {self.dir} is in use by another running seckill serve"
                + ("" if shared else " (the embedded server needs a data dir of its own)"),
            )
        ]
        if shared:
            self.metrics = self.dir / "metrics" / f"{socket.gethostname()}-{port}"
            try:
                self._locks.append(
                    lock_file(
                        self.metrics.with_name(self.metrics.name + ".lock"),
                        exclusive=True,
                        in_use=f"metrics dir {self.metrics} is in use by another running "
                        "seckill serve",
                    )
                )
            except DataDirError:
                self.close()
                raise
        else:
            self.metrics = self.dir / "metrics"

    def close(self) -> None:
        for lock in self._locks:
            lock.close()
        self._locks = []
