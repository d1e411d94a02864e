"""What the benchmark reads from /proc: RSS and CPU time of every process it
started, by role, and how busy the whole machine was.

A launched server is one process group; which of its processes does what
depends on the process count. With one process the leader serves HTTP
itself; with more, the leader only supervises and its ``multiprocessing``
children serve. Any other child is the embedded Valkey. CPU per request by
role is what tells a slower gateway worker from a busier Redis, and the
machine's busy time minus ours is the noise other work put into a run.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path
from typing import Any

from seckill.process.procs import children_of, cmdline, stat_fields

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of *pid* in kB ({} if it is gone)."""
    out: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0])
    return out


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds *pid* has used (None if it is gone)."""
    fields = stat_fields(pid)
    return None if fields is None else (int(fields[11]) + int(fields[12])) / _CLK_TCK


class ProcessSampler:
    """The processes of one launched server (group leader *pid*, serving with
    *processes* processes), by role, and the highest RSS each one reached.

    :meth:`snapshot` also keeps every process's peak (VmHWM) and role, so the
    peaks of processes that are gone by the end are still reported.
    """

    def __init__(self, pid: int, processes: int) -> None:
        self.pid, self.processes = pid, processes
        #: pid → highest VmHWM seen (kB), and its role.
        self.peak_kb: dict[int, int] = {}
        self.roles: dict[int, str] = {}

    def pids(self) -> dict[str, list[int]]:
        """Its processes by role: ``worker`` (serving HTTP), ``supervisor``, ``redis``."""
        if self.processes == 1:
            roles: dict[str, list[int]] = {"worker": [self.pid]}
        else:
            roles = {"supervisor": [self.pid], "worker": []}
        for kid in children_of(self.pid):
            cmd = cmdline(kid)
            if "resource_tracker" in cmd:
                continue
            if "multiprocessing" in cmd or "spawn_main" in cmd:
                roles["worker"].append(kid)
            elif cmd:
                roles.setdefault("redis", []).append(kid)
        return roles

    def snapshot(self) -> list[dict[str, Any]]:
        """RSS, peak RSS and CPU seconds of each of its processes, now."""
        rows = []
        for role, pids in self.pids().items():
            for pid in pids:
                st = memory_kb(pid)
                if not st:
                    continue
                self.roles[pid] = role
                hwm = st.get("VmHWM", 0)
                self.peak_kb[pid] = max(self.peak_kb.get(pid, 0), hwm)
                rows.append(
                    {
                        "pid": pid,
                        "role": role,
                        "rss_kb": st.get("VmRSS", 0),
                        "hwm_kb": hwm,
                        "cpu_s": cpu_seconds(pid),
                    }
                )
        return rows

    def peaks(self) -> list[dict[str, Any]]:
        """The highest RSS of every process seen in a snapshot, by pid."""
        return [
            {"pid": pid, "role": self.roles.get(pid, "?"), "hwm_kb": kb}
            for pid, kb in sorted(self.peak_kb.items())
        ]


def loadavg() -> list[str]:
    """The 1, 5 and 15 minute load averages, as /proc/loadavg writes them."""
    return Path("/proc/loadavg").read_text().split()[:3]


def machine_busy_s() -> float:
    """CPU seconds all CPUs spent not idle since boot (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system idle iowait irq softirq steal (guest is counted in user)
    return (sum(fields[:8]) - fields[3] - fields[4]) / _CLK_TCK


def own_cpu_s() -> float:
    """CPU seconds this process used (the harness's own share of the machine)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
