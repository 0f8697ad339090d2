"""The Redis key schema: every key the service uses is named here and nowhere else.

All keys start with the namespace `ns` (setting `REDIS_NAMESPACE`, default `mq`). Parts in
braces are Redis Cluster hash tags: every Lua script, transaction and multi-key command touches
keys of one tag only (moves between tags are two idempotent steps: append with a dedup marker,
then remove), and the partitions of one topic carry different tags so they spread across
slots and masters.

- `{ns}:s:{<topic_id>/<p>}` stream: partition `p` of a topic, one consumer group per
  subscription group (`group_name`). On a Redis Cluster it is `{ns}:s:{<shard>}<topic_id>/<p>`
  instead: the partitions of every topic are spread over `REDIS_CLUSTER_SHARDS` shard tags
  whose slots are evenly spaced across the 16,384 (`shard_tags`), partition `p` of a topic on
  the shard after partition `p - 1`'s. The streams of one shard share a slot, so one blocking
  `XREAD` can watch all of them (`broker.wake`); consecutive shards sit on different masters.
- `{ns}:s:{<topic_id>/<p>}:a` hash (record id -> entry id): messages appended to partition
  `p` whose offsets the publishing process has not yet written to their records; the append
  script sets a field with every XADD (and appends no record already marked) and the
  publisher deletes it once the offset is committed, so the outbox sweep can tell an
  appended record from one never appended.
- `{ns}:q:{<pool>}` stream: direct deliveries of a worker pool (released retries, redrives),
  one group named after the pool.
- `{ns}:q:{<pool>}:x` stream: dead letters of the pool's messages that are no subscription
  deliveries (other dramatiq actors'), each the stored message (`d`), the error (`e`) and its
  entry id in the pool stream (`id`); each new one drops those older than 7 days
  (`QUEUE_DEAD_LETTER_TTL_MS`).
- `{ns}:due:{<pool>}` sorted set (score = due time in ms) and `{ns}:due:{<pool>}:m` hash
  (id -> encoded message): retries waiting for their backoff (`broker/retries.py`).
- `{ns}:delay:{<shard>}` sorted set (member = message record id, score = due time in ms) and
  `{ns}:delay:{<shard>}:m` hash (record id -> stream key and entry): delayed and scheduled
  publishes waiting to be released (`broker/delays.py`).
- `{ns}:delay:{<shard>}:f` sorted set (record id -> time taken in ms): delayed messages a
  releaser took and is appending to their streams (`broker/delays.py`).
- `{ns}:delay:{<shard>}:w` pub/sub channel: wakes the releaser when an earlier message is parked.
- `{ns}:delay:{<shard>}:r` sorted set (record id -> release time in ms) and
  `{ns}:delay:{<shard>}:o` hash (record id -> stream offset): recently released messages.
- `{ns}:dlq:{<subscription_id>}` stream: a subscription's dead letters (listing, redrive).
- `{ns}:dlq:{<subscription_id>}:k:<stream>/<entry id>` string: marks a delivery as
  dead-lettered for an hour, so storing its dead letter again (after a crash between the
  steps of dead-lettering, or when a duplicate fails too) is a no-op.
- `{ns}:q:{<pool>}:k:<dead-letter entry id>` string: marks a dead letter as redriven into the
  pool stream for an hour (the redrive appends, then removes the dead letter).
- `{ns}:stats:{<subscription_id>}` hash: a subscription's delivery counters (`delivered`,
  `failed`, `filtered`, `dead_lettered`), kept by the workers.
- `{ns}:win:{<topic or subscription id>}` hash: a ring of per-second slots with recent publish
  (topics) or delivery (subscriptions) counts, read by the metrics API (`broker/rates.py`).
- `{ns}:win:{<topic or subscription id>}:m` hash: the same counts in per-minute slots (the
  dashboard's 15-minute sparklines).
- `{ns}:lat:{<subscription_id>}` list: recent delivery latencies (`"<ms>:<latency ms>"`).
- `{ns}:control` stream: control plane (subscription and topic changes) read by workers.
- `{ns}:procs` hash: process id -> JSON heartbeat of workers and schedulers.
- `{ns}:alive:<instance>` string: present while a worker instance beats (it expires after
  `WORKER_DEAD_AFTER_MS` without a beat, by the Redis server's clock); when it is gone, the
  surviving workers take over the instance's pending entries (`broker/takeover.py`).
- `{ns}:epoch` string: a counter the API increments when a cached key or topic changes.
- `{ns}:lock:<name>` string: leases of the scheduler's jobs (`scheduler-leader`,
  `delay-rebuild`, `retention`, `outbox`: the holder's token, with an expiry it renews) and
  claims of one run of a recurring schedule (`cron:<schedule id>:<run ms>`).
- `{ns}:rate:{<tenant_id>}:<second>` string: a tenant's publish count in one second.

Consumer group names are `<tenant_id>:<consumer_group>`: the subscribing tenant's id keeps
groups of different tenants apart on a public topic's stream.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from mq.settings import Settings


@dataclass(frozen=True)
class Keys:
    """Key names under one namespace; `shards` > 0 on a Redis Cluster (see the module
    docstring)."""

    ns: str = "mq"
    shards: int = 0

    @classmethod
    def of(cls, settings: Settings) -> Keys:
        shards = settings.redis_cluster_shards if settings.redis_cluster_nodes else 0
        return cls(settings.redis_namespace, shards)

    def stream(self, topic_id: str, partition: int) -> str:
        if self.shards:
            tags = shard_tags(self.shards)
            shard = (zlib.crc32(topic_id.encode()) + partition) % self.shards
            return f"{self.ns}:s:{{{tags[shard]}}}{topic_id}/{partition}"
        return f"{self.ns}:s:{{{topic_id}/{partition}}}"

    def appended(self, topic_id: str, partition: int) -> str:
        return self.stream_markers(self.stream(topic_id, partition))

    @staticmethod
    def stream_markers(stream: str) -> str:
        """The append markers (`appended`) of a partition stream given by its key."""
        return f"{stream}:a"

    def streams(self, topic_id: str, partition_count: int) -> list[str]:
        return [self.stream(topic_id, p) for p in range(partition_count)]

    def pool_stream(self, pool: str) -> str:
        return f"{self.ns}:q:{{{pool}}}"

    def queue_dead_letters(self, pool: str) -> str:
        return f"{self.pool_stream(pool)}:x"

    def retry_due(self, pool: str) -> str:
        return f"{self.ns}:due:{{{pool}}}"

    def retry_payloads(self, pool: str) -> str:
        return f"{self.ns}:due:{{{pool}}}:m"

    def delayed(self, shard: int = 0) -> str:
        return f"{self.ns}:delay:{{{shard}}}"

    def delayed_payloads(self, shard: int = 0) -> str:
        return f"{self.ns}:delay:{{{shard}}}:m"

    def delay_wake(self, shard: int = 0) -> str:
        return f"{self.ns}:delay:{{{shard}}}:w"

    def delay_released(self, shard: int = 0) -> str:
        return f"{self.ns}:delay:{{{shard}}}:r"

    def delay_in_flight(self, shard: int = 0) -> str:
        return f"{self.ns}:delay:{{{shard}}}:f"

    def delay_offsets(self, shard: int = 0) -> str:
        return f"{self.ns}:delay:{{{shard}}}:o"

    def dead_letters(self, subscription_id: str) -> str:
        return f"{self.ns}:dlq:{{{subscription_id}}}"

    def dead_letter_marker(self, subscription_id: str, stream: str, entry_id: str) -> str:
        return f"{self.dead_letters(subscription_id)}:k:{stream}/{entry_id}"

    def redrive_marker(self, pool: str, dead_letter_id: str) -> str:
        return f"{self.pool_stream(pool)}:k:{dead_letter_id}"

    def subscription_counters(self, subscription_id: str) -> str:
        return f"{self.ns}:stats:{{{subscription_id}}}"

    def rate_window(self, owner_id: str) -> str:
        return f"{self.ns}:win:{{{owner_id}}}"

    def rate_minutes(self, owner_id: str) -> str:
        return f"{self.rate_window(owner_id)}:m"

    def latencies(self, subscription_id: str) -> str:
        return f"{self.ns}:lat:{{{subscription_id}}}"

    @property
    def control(self) -> str:
        return f"{self.ns}:control"

    @property
    def processes(self) -> str:
        return f"{self.ns}:procs"

    def worker_alive(self, instance: str) -> str:
        return f"{self.ns}:alive:{instance}"

    @property
    def cache_epoch(self) -> str:
        return f"{self.ns}:epoch"

    def lock(self, name: str) -> str:
        return f"{self.ns}:lock:{name}"

    def publish_rate(self, tenant_id: str, second: int) -> str:
        return f"{self.ns}:rate:{{{tenant_id}}}:{second}"

    @property
    def pattern(self) -> str:
        """A SCAN pattern matching every key of this namespace."""
        return f"{self.ns}:*"


@functools.cache
def shard_tags(count: int) -> tuple[str, ...]:
    """`count` hash tags, the i-th hashing into the i-th of `count` equal ranges of slots: a
    cluster's masters own contiguous ranges, so consecutive tags land on different masters."""
    width = REDIS_CLUSTER_HASH_SLOTS / count
    tags: list[str] = []
    for shard in range(count):
        low, high = int(shard * width), int((shard + 1) * width)
        tag = next(t for n in range(1_000_000)
                   if low <= key_slot((t := f"{shard}.{n}").encode()) < high)
        tags.append(tag)
    return tuple(tags)


def slot_tag(key: str) -> str:
    """The part of `key` Redis Cluster hashes (its first `{...}`, else the whole key)."""
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start + 1:end] if start >= 0 and end > start + 1 else key


def group_name(tenant_id: str, consumer_group: str) -> str:
    """The Redis consumer group of a subscription group."""
    return f"{tenant_id}:{consumer_group}"
