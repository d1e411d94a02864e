"""Process facts from /proc, for the harnesses and the tests that run servers."""

from __future__ import annotations

from pathlib import Path


def children_of(pid: int) -> list[int]:
    """Direct children of *pid*, sorted."""
    kids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # the command name may hold spaces and parentheses: fields start after the last ")"
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            kids.append(int(entry.name))
    return sorted(kids)
