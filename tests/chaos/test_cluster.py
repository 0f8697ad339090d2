"""A Redis Cluster master SIGKILLed while messages flow: its replica is promoted, and with
`REDIS_WAIT_REPLICAS=1` every acknowledged publish survives and is delivered; publishing and
delivering resume once the cluster has failed over."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.crc import key_slot

from broker.keys import Keys
from mq.settings import Settings
from tests.chaos.conftest import Fleet, figure, running_fleet
from tests.cluster import RedisClusterProcesses

pytestmark = pytest.mark.e2e


@pytest.fixture
def own_cluster() -> Iterator[RedisClusterProcesses]:
    """A cluster of this test's own (ports from 7300): one of its masters is killed."""
    with RedisClusterProcesses(base_port=7300) as cluster:
        yield cluster


@pytest.fixture
def cluster_fleet(chaos_settings: Settings, own_cluster: RedisClusterProcesses,
                  tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Fleet]:
    settings = dataclasses.replace(
        chaos_settings, redis_cluster_nodes=tuple(own_cluster.nodes), redis_wait_replicas=1,
        redis_wait_timeout_ms=500, redis_namespace="failover")
    with running_fleet(settings, tmp_path, request, own_cluster.describe) as fleet:
        yield fleet


def test_a_master_killed_mid_load_loses_no_acknowledged_publish(
        cluster_fleet: Fleet, own_cluster: RedisClusterProcesses) -> None:
    fleet = cluster_fleet
    topic = fleet.topic(partitions=3)
    fleet.subscribe(topic, "/f")
    fleet.processes.worker(threads=4)
    fleet.processes.scheduler()
    stream = Keys.of(fleet.settings).stream(topic["id"], 0)
    victim = own_cluster.master_of_slot(key_slot(stream.encode()))
    publisher = fleet.publish_steadily(topic, batch=10, every_s=0.1, for_s=120)
    time.sleep(2.0)
    before = len(publisher.acknowledged)

    own_cluster.kill(victim)
    killed_at = time.time()
    promoted = own_cluster.wait_for_failover(victim, timeout=30)
    failover_s = time.time() - killed_at
    time.sleep(3.0)
    acknowledged = publisher.stop()

    counts = fleet.wait_for_all("/f", acknowledged, timeout=90)
    assert before > 0 and promoted != victim
    assert any(at > killed_at + failover_s for at in fleet.acknowledged_at), \
        "publishes acknowledged after the failover"
    delivered_after = fleet.first_arrival_after("/f", killed_at + failover_s)
    assert delivered_after is not None, "deliveries after the failover"
    figure("Redis Cluster master SIGKILL (WAIT 1 replica)", published=len(acknowledged),
           lost=0, duplicates=sum(counts.values()) - len(acknowledged),
           failed_publishes_retried=fleet.failed_publishes, failover_s=failover_s,
           publishes_resumed_after_kill_s=fleet.first_ack_after(killed_at),
           deliveries_after_failover_s=delivered_after)
