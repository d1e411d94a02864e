"""Small facts and acts about child processes, shared by the server, the
launcher, the benchmark and the tests: a free port, dying with the parent,
/proc lookups, stopping a whole process group."""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the kernel's pick; it may be taken
    again before it is used)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def die_with_parent(parent_pid: int) -> None:
    """In a child process (between fork and exec, or first thing in a spawned
    child): get SIGTERM from the kernel when *parent_pid*, our parent, dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def stat_fields(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name, from the state
    on (None: gone); ``[11]`` and ``[12]`` are utime and stime in ticks."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name may hold spaces and parentheses: fields start after the last ")"
    return stat.rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    """True while *pid* exists and is not a zombie."""
    fields = stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def cmdline(pid: int) -> str:
    """The command line of *pid*, arguments joined by spaces ('' if gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def children_of(pid: int) -> list[int]:
    """Direct children of *pid*, sorted."""
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = stat_fields(int(entry.name))
            if fields is not None and int(fields[1]) == pid:
                kids.append(int(entry.name))
    return sorted(kids)


def stop_group(proc: subprocess.Popen[Any], sig: int, timeout: float) -> int | None:
    """Send *sig* to *proc* (the leader of its own session), wait up to
    *timeout* seconds, then SIGKILL the whole group: nothing it started
    outlives this. Its exit code, or None if it had to be killed."""
    code = proc.poll()
    if code is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            code = None
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait(10)
    return code


def raise_fd_limit(ceiling: int = 1 << 20) -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (at most
    *ceiling* when the hard limit is unlimited); children inherit it. The soft
    limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = ceiling if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
