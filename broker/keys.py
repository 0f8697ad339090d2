"""The Redis key schema: every key the service uses is named here and nowhere else.

All keys start with the namespace `ns` (setting `REDIS_NAMESPACE`, default `mq`). Parts in
braces are Redis Cluster hash tags: everything one Lua script touches shares a tag, and the
partitions of one topic carry different tags so they spread across slots.

- `{ns}:s:{<topic_id>/<p>}` stream: partition `p` of a topic, one consumer group per
  subscription group (`group_name`).
- `{ns}:s:{<topic_id>/<p>}:a` hash (record id -> entry id): messages appended to partition
  `p` whose offsets the publishing process has not yet written to their records; the append
  script sets a field with every XADD (and appends no record already marked) and the
  publisher deletes it once the offset is committed, so the outbox sweep can tell an
  appended record from one never appended.
- `{ns}:q:{<pool>}` stream: direct deliveries of a worker pool (released retries, redrives),
  one group named after the pool.
- `{ns}:due:{<pool>}` sorted set (score = due time in ms) and `{ns}:due:{<pool>}:m` hash
  (id -> encoded message): retries waiting for their backoff (`broker/retries.py`).
- `{ns}:delay:{<shard>}` sorted set (member = message record id, score = due time in ms) and
  `{ns}:delay:{<shard>}:m` hash (record id -> stream key and entry): delayed and scheduled
  publishes waiting to be released (`broker/delays.py`).
- `{ns}:delay:{<shard>}:w` pub/sub channel: wakes the releaser when an earlier message is parked.
- `{ns}:delay:{<shard>}:r` sorted set (record id -> release time in ms) and
  `{ns}:delay:{<shard>}:o` hash (record id -> stream offset): recently released messages.
- `{ns}:dlq:{<subscription_id>}` stream: a subscription's dead letters (listing, redrive).
- `{ns}:stats:{<subscription_id>}` hash: a subscription's delivery counters (`delivered`,
  `failed`, `filtered`, `dead_lettered`), kept by the workers.
- `{ns}:win:{<topic or subscription id>}` hash: a ring of per-second slots with recent publish
  (topics) or delivery (subscriptions) counts, read by the metrics API (`broker/rates.py`).
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

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    """Key names under one namespace."""

    ns: str = "mq"

    def stream(self, topic_id: str, partition: int) -> str:
        return f"{self.ns}:s:{{{topic_id}/{partition}}}"

    def appended(self, topic_id: str, partition: int) -> str:
        return f"{self.stream(topic_id, partition)}:a"

    def streams(self, topic_id: str, partition_count: int) -> list[str]:
        return [self.stream(topic_id, p) for p in range(partition_count)]

    def pool_stream(self, pool: str) -> str:
        return f"{self.ns}:q:{{{pool}}}"

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

    def delay_offsets(self, shard: int = 0) -> str:
        return f"{self.ns}:delay:{{{shard}}}:o"

    def dead_letters(self, subscription_id: str) -> str:
        return f"{self.ns}:dlq:{{{subscription_id}}}"

    def subscription_counters(self, subscription_id: str) -> str:
        return f"{self.ns}:stats:{{{subscription_id}}}"

    def rate_window(self, owner_id: str) -> str:
        return f"{self.ns}:win:{{{owner_id}}}"

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


def group_name(tenant_id: str, consumer_group: str) -> str:
    """The Redis consumer group of a subscription group."""
    return f"{tenant_id}:{consumer_group}"
