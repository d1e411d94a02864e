"""The data dir's lock: one ``seckill serve`` per data dir.

Taken first, before anything under the data dir is created, read or wiped
(the metrics directory, the embedded server's files, the SQLite sink): a
second ``serve`` pointed at a data dir in use leaves it untouched and exits 2.
An ``flock``, so the kernel releases it when its holder dies, even by kill -9.
"""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO

LOCK_FILE = "seckill.lock"


class DataDirError(RuntimeError):
    """The data dir is unusable or in use; one line for the operator."""


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Create *data_dir* if missing and lock it; the returned file holds the
    lock until it is closed or the process exits."""
    path = data_dir.resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        lock = (path / LOCK_FILE).open("a+")
    except OSError as exc:
        raise DataDirError(f"cannot use data dir {path}: {exc.strerror}") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise DataDirError(f"data dir {path} is in use by another running seckill serve") from None
    return lock
