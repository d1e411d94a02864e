"""One measurement: a scenario at P processes and C connections, what wrk saw,
what /proc said before and after, and the line docs/API.md §8 promises.

``bench <scenario>-<P>p-c<C> rps=<n> p50_ms=<x> p99_ms=<y> ratio_to_bare=<r>``
is a public contract: :data:`LINE_RE` is what the tests hold it to.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from loadtest.bench.wrk import WrkResult

LINE_RE = re.compile(
    r"^bench (bare|admit|sold_out|rate_limited|mixed_spike)-[12]p-c(64|256) "
    r"rps=\d+ p50_ms=[\d.]+ p99_ms=[\d.]+ ratio_to_bare=[\d.]+"
    r"( admits_per_s=\d+ gateway_us_per_admit=[\d.]+ valkey_us_per_admit=[\d.]+"
    r" delivery_us_per_order=[\d.]+/[\d.]+ server_us_per_order=[\d.]+"
    r"| sold=\d+ gateway_us_per_order=[\d.]+ valkey_us_per_order=[\d.]+"
    r" server_us_per_order=[\d.]+)?$"
)
#: the fields an ``admit`` line adds (additive: the five above come first),
#: from :func:`loadtest.bench.scenarios.cpu_per_order`: admissions/s, the
#: gateway's and Valkey's CPU µs per admission (the delivery done meanwhile
#: taken out), the CPU µs per delivered order (gateway/Valkey) measured while
#: the backlog drains after the run, and their sum: the server's CPU per
#: admitted order, delivery included. A ``mixed_spike`` line adds the units
#: sold and the server's CPU per unit sold from the start of the run until its
#: backlog was delivered (:func:`loadtest.bench.scenarios.spike_cpu_per_order`).
#: the shard scenario's line (opt-in, :mod:`loadtest.bench.shards`): the same
#: fields, then admissions/s, each primary's CPU µs per admission and the
#: busiest primary's share of their CPU.
SHARD_LINE_RE = re.compile(
    r"^bench shards\d+-[12]p-c\d+ "
    r"rps=\d+ p50_ms=[\d.]+ p99_ms=[\d.]+ ratio_to_bare=[\d.]+ "
    r"admits_per_s=\d+ valkey_us_per_admit=[\d.]+(/[\d.]+)* busiest_node_share=[\d.]+$"
)


@dataclasses.dataclass
class Measurement:
    scenario: str
    processes: int
    connections: int
    wrk: WrkResult
    wrk_cpu_s: float
    rss_start: list[dict[str, Any]]
    rss_end: list[dict[str, Any]]
    errors: dict[str, Any]
    extra: dict[str, Any]
    loadavg: float
    #: the name of the server it ran against
    service: str = ""
    ratio_to_bare: float = 0.0
    #: CPU cores busy with processes this benchmark did not start (other
    #: work on the machine: the noise in the figures), over the measured run.
    other_cores: float = 0.0

    @property
    def key(self) -> str:
        return f"{self.scenario}-{self.processes}p-c{self.connections}"

    def line(self) -> str:
        return (
            (
                f"bench {self.key} rps={round(self.wrk.rps)} p50_ms={self.wrk.ms('p50'):.2f} "
                f"p99_ms={self.wrk.ms('p99'):.2f} ratio_to_bare={self.ratio_to_bare:.2f}"
            )
            + self._shard_fields()
            + self._admit_fields()
        )

    def _admit_fields(self) -> str:
        """The admit and mixed_spike scenarios' CPU per order after the usual
        fields ('' for the others)."""
        spike = self.extra.get("spike_cpu_per_order")
        if spike:
            return (
                f" sold={spike['sold']}"
                f" gateway_us_per_order={spike['gateway_us_per_order']:.1f}"
                f" valkey_us_per_order={spike['valkey_us_per_order']:.1f}"
                f" server_us_per_order={spike['server_us_per_order']:.1f}"
            )
        cost = self.extra.get("cpu_per_order")
        if not cost:
            return ""
        return (
            f" admits_per_s={round(cost['admits_per_s'])}"
            f" gateway_us_per_admit={cost['gateway_us_per_admit']:.1f}"
            f" valkey_us_per_admit={cost['valkey_us_per_admit']:.1f}"
            f" delivery_us_per_order={cost['delivery_gateway_us']:.1f}"
            f"/{cost['delivery_valkey_us']:.1f}"
            f" server_us_per_order={cost['server_us_per_order']:.1f}"
        )

    def _shard_fields(self) -> str:
        """The shard scenario's figures after the usual ones ('' for the others)."""
        shards = self.extra.get("shards")
        if not shards:
            return ""
        per_node = "/".join(f"{n['cpu_us_per_admit']:.1f}" for n in shards["nodes"])
        return (
            f" admits_per_s={round(shards['admits_per_s'])} valkey_us_per_admit={per_node}"
            f" busiest_node_share={shards['busiest_node_share']:.2f}"
        )

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds by role (worker, supervisor, redis, wrk) over the measured run."""
        start = {row["pid"]: row for row in self.rss_start}
        spent: dict[str, float] = {}
        for row in self.rss_end:
            first = start.get(row["pid"])
            if first is None or row["cpu_s"] is None or first["cpu_s"] is None:
                continue
            spent[row["role"]] = spent.get(row["role"], 0.0) + row["cpu_s"] - first["cpu_s"]
        spent["wrk"] = self.wrk_cpu_s
        return spent

    def cpu_us_per_request(self) -> dict[str, float]:
        """CPU µs per request, by role, over the measured run (warm-up excluded)."""
        n = max(1, self.wrk.requests)
        return {role: round(sec * 1e6 / n, 1) for role, sec in self.cpu_seconds().items()}

    def as_json(self) -> dict[str, Any]:
        w = self.wrk
        return {
            "key": self.key,
            "line": self.line(),
            "scenario": self.scenario,
            "processes": self.processes,
            "connections": self.connections,
            "service": self.service,
            "requests": w.requests,
            "duration_s": round(w.duration_s, 3),
            "rps": round(w.rps, 1),
            "latency_ms": {k: round(v / 1000.0, 3) for k, v in w.latency_us.items()},
            "ratio_to_bare": round(self.ratio_to_bare, 3),
            "wrk_errors": w.errors,
            "non2xx": w.non2xx,
            "errors": self.errors,
            "cpu_us_per_request": self.cpu_us_per_request(),
            "cpu_s": {k: round(v, 3) for k, v in self.cpu_seconds().items()},
            "other_cores": round(self.other_cores, 2),
            "rss_start": self.rss_start,
            "rss_end": self.rss_end,
            "loadavg_1m_before": self.loadavg,
            **self.extra,
        }
