"""The local cluster the cluster tests run on (tests/helpers/cluster.py): it forms,
serves every slot, and a node killed and restarted takes its slots back."""

from __future__ import annotations

import pytest
import redis

from tests.helpers.cluster import LocalCluster, slot_of

pytestmark = pytest.mark.cluster


def test_every_node_serves_its_share(local_cluster: LocalCluster) -> None:
    local_cluster.ensure_running()
    assert local_cluster.url.startswith("redis+cluster://")
    assert len(local_cluster.nodes) == 3
    for node in local_cluster.nodes:
        sale_id = local_cluster.sale_on(node.index)
        owner = local_cluster.node_of(f"seckill:{{{sale_id}}}:sale")
        assert owner.port == node.port
        low, high = node.slot_range(3)
        assert low <= slot_of(f"{{{sale_id}}}") <= high
        assert node.pid is not None


def test_a_killed_node_comes_back_with_its_slots_and_data(local_cluster: LocalCluster) -> None:
    local_cluster.ensure_running()
    local_cluster.flush_all()
    node = local_cluster.nodes[1]
    key = f"seckill:{{{local_cluster.sale_on(1)}}}:sale"
    with node.client() as c:
        c.set(key, "kept")
    local_cluster.kill(1)
    assert not node.running
    with pytest.raises(redis.ConnectionError), node.client() as c:
        c.ping()
    local_cluster.restart(1)
    with node.client() as c:
        assert c.get(key) == "kept"  # the AOF: written before the reply
    assert local_cluster.node_of(key).port == node.port
