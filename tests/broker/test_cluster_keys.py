"""The key schema on a Redis Cluster: a topic's partitions, and the keys of tenants, pools
and subscriptions, spread over every master; nothing a script touches crosses a slot."""

from __future__ import annotations

from flask import Flask
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from broker.keys import Keys, shard_tags, slot_tag
from mq.settings import Settings
from tests.cluster import RedisClusterProcesses
from tests.conftest import make_tenant


def test_shard_tags_hash_into_evenly_spaced_slot_ranges() -> None:
    for count in (1, 3, 16, 64):
        slots = [key_slot(tag.encode()) for tag in shard_tags(count)]
        width = REDIS_CLUSTER_HASH_SLOTS / count
        assert [int(slot // width) for slot in slots] == list(range(count))


def test_keys_on_a_cluster_use_shard_tags_and_a_single_redis_keeps_its_names(
        settings: Settings, cluster_settings: Settings) -> None:
    single, cluster = Keys.of(settings), Keys.of(cluster_settings)
    assert single.shards == 0 and cluster.shards == cluster_settings.redis_cluster_shards
    assert single.stream("t", 3) == f"{settings.redis_namespace}:s:{{t/3}}"
    tags = [slot_tag(cluster.stream("t", p)) for p in range(cluster.shards)]
    assert sorted(tags) == sorted(shard_tags(cluster.shards)), "one partition per shard"
    stream = cluster.stream("t", 0)
    assert slot_tag(cluster.appended("t", 0)) == slot_tag(stream)
    sub = "8f0c"
    assert slot_tag(cluster.dead_letter_marker(sub, stream, "1-0")) \
        == slot_tag(cluster.dead_letters(sub)) == slot_tag(cluster.subscription_counters(sub))
    assert slot_tag(cluster.redrive_marker("default", "1-0")) \
        == slot_tag(cluster.pool_stream("default")) == slot_tag(cluster.retry_due("default"))


def test_a_topic_published_through_the_api_spreads_over_every_master(
        cluster_app: Flask, cluster_settings: Settings,
        redis_cluster: RedisClusterProcesses) -> None:
    topics: list[str] = []
    for _ in range(3):  # three tenants, each with a 12-partition topic
        admin = make_tenant(cluster_app.test_client()).admin
        topic = admin.post("/queues", {"name": "wide", "partition_count": 12})
        assert topic.status_code == 201, topic.json
        topics.append(topic.json["id"])
        answer = admin.post("/publish/batch", {"topic": "wide", "messages": [
            {"payload": i, "partition": i % 12} for i in range(120)]})
        assert answer.status_code == 201, answer.json

    held: dict[str, list[str]] = {}  # master -> its partition streams
    pattern = f"{cluster_settings.redis_namespace}:s:*"
    for master in redis_cluster.masters():
        with redis_cluster.node_client(master) as node:
            held[master] = [key for key in node.scan_iter(pattern, count=1000)
                            if not key.endswith(":a")]
    assert sum(map(len, held.values())) == 36, held
    for topic_id in topics:
        per_master = {master: sum(topic_id in key for key in keys)
                      for master, keys in held.items()}
        assert len(per_master) == 3 and min(per_master.values()) >= 1, per_master
