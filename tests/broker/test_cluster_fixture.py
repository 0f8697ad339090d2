"""The `redis_cluster` fixture (`tests.cluster`): a real Redis Cluster of 3 masters with one
replica each, which a cluster client uses across slots, and in which a SIGKILLed master's
replica takes over."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

import pytest
from redis.crc import key_slot

from tests.cluster import SLOT_RANGES, RedisClusterProcesses


def role(cluster: RedisClusterProcesses, node: str) -> str:
    """What the node itself says it is (ROLE): "master" or "slave"."""
    with cluster.node_client(node) as client:
        return str(client.execute_command("ROLE")[0])


def test_three_masters_with_one_replica_each(redis_cluster: RedisClusterProcesses) -> None:
    masters, replicas = redis_cluster.masters(), redis_cluster.replicas()
    assert len(masters) == 3
    assert len(replicas) == 3
    assert sorted(masters + replicas) == sorted(redis_cluster.nodes)
    assert {node: role(redis_cluster, node) for node in redis_cluster.nodes} == {
        **{node: "master" for node in masters}, **{node: "slave" for node in replicas}}
    assert sorted(replica for master in masters
                  for replica in redis_cluster.replicas_of(master)) == replicas
    assert all(len(redis_cluster.replicas_of(master)) == 1 for master in masters)
    for node in redis_cluster.nodes:
        info = redis_cluster.cluster_info(node)
        assert info is not None, node
        assert (info["cluster_state"], info["cluster_slots_assigned"],
                info["cluster_known_nodes"]) == ("ok", "16384", "6"), node
    # The slots are split evenly, as `redis-cli --cluster create` splits them: 0-5460,
    # 5461-10922, 10923-16383, to the masters in port order.
    assert [[redis_cluster.master_of_slot(slot) for slot in bounds]
            for bounds in SLOT_RANGES] == [[master, master] for master in masters]


def test_a_cluster_client_writes_and_reads_across_slots(
        redis_cluster: RedisClusterProcesses) -> None:
    redis_cluster.flushall()
    keys = [f"fixture-{number}" for number in range(300)]
    client = redis_cluster.client()
    try:
        for key in keys:
            client.set(key, key.upper())
        assert [client.get(key) for key in keys] == [key.upper() for key in keys]
        client.mset({"{tag}a": "1", "{tag}b": "2"})  # one slot: a multi-key command works
        assert client.mget("{tag}a", "{tag}b") == ["1", "2"]
    finally:
        client.close()

    # Each key is stored on the master that CLUSTER NODES names for its slot, and the keys
    # spread over all three.
    owned: defaultdict[str, list[str]] = defaultdict(list)
    for key in [*keys, "{tag}a", "{tag}b"]:
        owned[redis_cluster.master_of_slot(key_slot(key.encode()))].append(key)
    assert set(owned) == set(redis_cluster.masters())
    for master, its_keys in owned.items():
        with redis_cluster.node_client(master) as node:
            assert node.dbsize() == len(its_keys), master
            assert node.exists(*its_keys[:1]) == 1
    redis_cluster.flushall()
    for master in redis_cluster.masters():
        with redis_cluster.node_client(master) as node:
            assert node.dbsize() == 0, master


@pytest.fixture
def own_cluster() -> Iterator[RedisClusterProcesses]:
    """A cluster of this test's own (ports from 7200), for killing nodes in it."""
    with RedisClusterProcesses(base_port=7200) as cluster:
        yield cluster


def test_a_killed_master_is_replaced_by_its_replica_and_rejoins_as_replica(
        own_cluster: RedisClusterProcesses) -> None:
    cluster = own_cluster
    key = "failover-key"
    slot = key_slot(key.encode())
    master = cluster.master_of_slot(slot)
    (replica,) = cluster.replicas_of(master)
    client = cluster.client()
    try:
        client.set(key, "kept")
    finally:
        client.close()
    with cluster.node_client(master) as node:
        assert node.wait(1, 5000) == 1  # the replica has the key before the master dies

    cluster.kill(master)
    assert not cluster.running(master)
    assert cluster.wait_for_failover(master, timeout=30) == replica
    assert cluster.master_of_slot(slot) == replica
    assert master not in cluster.masters()
    assert role(cluster, replica) == "master"
    client = cluster.client()
    try:
        assert client.get(key) == "kept"
        client.set(key, "after failover")
    finally:
        client.close()

    cluster.restart(master)  # returns once the cluster is whole again
    assert role(cluster, master) == "slave"
    assert cluster.replicas_of(replica) == [master]
    assert len(cluster.masters()) == 3
    assert len(cluster.replicas()) == 3
    # It has copied its new master's data (READONLY: a replica serves reads on its connection).
    with cluster.node_client(master, single_connection_client=True) as node:
        node.execute_command("READONLY")
        assert node.get(key) == "after failover"
