"""What a run leaves behind: the table and RSS lines printed at the end, then
the §8 lines (last, so a script can take the tail), and the files in the
output directory: ``bench-<UTC time>.json`` and ``latest.json`` with every
figure, ``latest.md`` with the table for docs/performance.md."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from loadtest.bench.measurement import Measurement
from loadtest.bench.runner import Bench
from loadtest.bench.sampling import loadavg
from loadtest.bench.scenarios import LIMITED, SPIKE_STOCK, SPIKE_USERS
from loadtest.bench.wrk import THREADS, WRK_TIMEOUT


def _mb(kb: int) -> str:
    return f"{kb / 1024:.0f}"


def human_table(results: list[Measurement]) -> list[str]:
    rows = [
        "scenario       P    C      rps   p50ms   p99ms  ratio  errors  non2xx  "
        "worker RSS MB start->end  cpu us/req worker/redis/wrk  other cores  notes"
    ]
    for m in results:
        start = [r["rss_kb"] for r in m.rss_start if r["role"] == "worker"]
        end = [r["rss_kb"] for r in m.rss_end if r["role"] == "worker"]
        rss = f"{'/'.join(_mb(k) for k in start)}->{'/'.join(_mb(k) for k in end)}"
        cpu = m.cpu_us_per_request()
        cpu_s = f"{cpu.get('worker', 0):.0f}/{cpu.get('redis', 0):.0f}/{cpu.get('wrk', 0):.0f}"
        notes = []
        if "time_to_sold_out_s" in m.extra:
            t = m.extra["time_to_sold_out_s"]
            notes.append("not sold out" if t is None else f"sold out {t}s")
        if "time_to_drain_s" in m.extra:
            notes.append(f"drained {m.extra['time_to_drain_s']}s")
        if m.scenario == "admit":
            notes.append(f"backlog at end {m.extra.get('backlog_at_end')}")
        if "shards" in m.extra:
            shards = m.extra["shards"]
            per_node = "/".join(f"{n['cpu_us_per_admit']:.0f}" for n in shards["nodes"])
            notes.append(
                f"valkey us/admit per node {per_node}, busiest {shards['busiest_node_share']:.2f}"
            )
        if m.errors.get("status_5xx") is None and m.scenario not in ("bare", "admit"):
            notes.append("5xx unknown (no /metrics)")
        rows.append(
            f"{m.scenario:<13} {m.processes:>2} {m.connections:>4} {m.wrk.rps:>8.0f} "
            f"{m.wrk.ms('p50'):>7.2f} {m.wrk.ms('p99'):>7.2f} {m.ratio_to_bare:>6.2f} "
            f"{m.errors['total']:>7} {m.wrk.non2xx:>7}  {rss:<25}  {cpu_s:<27}  "
            f"{m.other_cores:>11.2f}  {'; '.join(notes)}"
        )
    return rows


def rss_lines(services: dict[str, dict[str, Any]]) -> list[str]:
    """The peak RSS of every process of every server, one line per server."""
    lines = []
    for name, info in services.items():
        peaks = ", ".join(
            f"{row['role']} {row['pid']} {_mb(row['hwm_kb'])} MB" for row in info["peak_rss_kb"]
        )
        lines.append(f"peak RSS {name}: {peaks}")
    return lines


def rss_drift(results: list[Measurement]) -> dict[str, Any]:
    """Per gateway process: RSS at the start of its service's first measured
    run (after the warm-up) and at the end of its last, and the change in
    percent (the target: within ±10% over a 60 s run)."""
    out: dict[str, Any] = {}
    for name in dict.fromkeys(m.service for m in results if m.scenario != "bare"):
        runs = [m for m in results if m.service == name]
        first = {r["pid"]: r["rss_kb"] for r in runs[0].rss_start if r["role"] == "worker"}
        last = {r["pid"]: r["rss_kb"] for r in runs[-1].rss_end if r["role"] == "worker"}
        out[name] = {
            "runs": [m.key for m in runs],
            "workers": {
                str(pid): {
                    "start_kb": kb,
                    "end_kb": last.get(pid),
                    "change_pct": None
                    if pid not in last
                    else round(100 * (last[pid] - kb) / kb, 1),
                }
                for pid, kb in first.items()
            },
        }
    return out


def drift_lines(results: list[Measurement]) -> list[str]:
    """:func:`rss_drift`, one line per gateway worker."""
    lines = []
    for name, drift in rss_drift(results).items():
        for pid, d in drift["workers"].items():
            pct = "gone" if d["change_pct"] is None else f"{d['change_pct']:+}%"
            lines.append(
                f"RSS {name} worker {pid}: {_mb(d['start_kb'])} MB -> "
                f"{_mb(d['end_kb'] or 0)} MB ({pct}) over {', '.join(drift['runs'])}"
            )
    return lines


def markdown(results: list[Measurement], machine: dict[str, Any], when: str) -> str:
    lines = [
        f"Taken {when} on {machine['cpu_model']} ({machine['nproc']} CPUs, wrk and the server "
        f"sharing them), Python {machine['python']}, `{machine['wrk']}`, commit {machine['git']}.",
        "",
        "| scenario | processes | connections | requests/s | p50 ms | p99 ms | × bare | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in results:
        lines.append(
            f"| {m.scenario} | {m.processes} | {m.connections} | {m.wrk.rps:.0f} | "
            f"{m.wrk.ms('p50'):.2f} | {m.wrk.ms('p99'):.2f} | {m.ratio_to_bare:.2f} | "
            f"{m.errors['total']} |"
        )
    return "\n".join(lines) + "\n"


def write_report(bench: Bench, started: datetime, machine: dict[str, Any]) -> Path:
    """The JSON report (under its own name and as latest.json) and latest.md;
    the path of the first."""
    out_dir = bench.opts.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    finished = datetime.now(UTC)
    report = {
        "schema": 1,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": finished.isoformat(timespec="seconds"),
        "machine": machine,
        "loadavg_at_end": loadavg(),
        "config": {
            "scenarios": list(bench.opts.scenarios),
            "processes": list(bench.opts.processes),
            "connections": list(bench.opts.connections),
            "duration_s": bench.opts.duration,
            "warmup_s": bench.opts.warmup,
            "quick": bench.opts.quick,
            "wrk_threads": THREADS,
            "wrk_timeout": WRK_TIMEOUT,
            "spike_stock": SPIKE_STOCK,
            "spike_users": SPIKE_USERS,
            "rate_limited_limits": LIMITED,
        },
        "lines": [m.line() for m in bench.results],
        "results": [m.as_json() for m in bench.results],
        "services": bench.services,
        "rss_drift": rss_drift(bench.results),
        "problems": bench.problems,
    }
    text = json.dumps(report, indent=2) + "\n"
    path = out_dir / f"bench-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(text)
    (out_dir / "latest.json").write_text(text)
    (out_dir / "latest.md").write_text(
        markdown(bench.results, machine, started.strftime("%Y-%m-%d %H:%M UTC"))
    )
    return path


def print_summary(bench: Bench, path: Path) -> None:
    """The end of stdout: the table, the RSS lines, where the files are, then
    the §8 lines, last."""
    print()
    for row in [
        *human_table(bench.results),
        *rss_lines(bench.services),
        *drift_lines(bench.results),
    ]:
        print(row)
    if bench.problems:
        print(f"{len(bench.problems)} problem(s): see 'problems' in {path}")
    print(f"results: {path} (and latest.json, latest.md)")
    print()
    for m in bench.results:
        print(m.line())
