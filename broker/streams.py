"""Topic partition streams: append, consumer groups, statistics, purge and delete."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from redis.exceptions import ResponseError

from broker.connection import RedisClient
from broker.envelope import Envelope
from broker.keys import Keys


@dataclass(frozen=True)
class GroupStats:
    name: str
    pending: int
    lag: int


@dataclass(frozen=True)
class PartitionStats:
    partition: int
    length: int
    first_offset: str | None
    last_offset: str | None
    entries_added: int
    groups: list[GroupStats] = field(default_factory=list)


class TopicStreams:
    """The partition streams of topics, addressed by topic id and partition number."""

    def __init__(self, redis: RedisClient, keys: Keys, *, max_len: int) -> None:
        self.redis = redis
        self.keys = keys
        self.max_len = max_len

    def append(self, topic_id: str, partition: int, envelope: Envelope) -> str:
        """XADD one message; returns its entry id (the message's offset)."""
        return self.redis.xadd(
            self.keys.stream(topic_id, partition),
            envelope.encode(),
            maxlen=self.max_len,
            approximate=True,
        )

    def append_many(self, topic_id: str, items: Sequence[tuple[int, Envelope]]) -> list[str]:
        """XADD several messages in one round trip, in order; returns their entry ids."""
        pipe = self.redis.pipeline(transaction=False)
        for partition, envelope in items:
            pipe.xadd(
                self.keys.stream(topic_id, partition),
                envelope.encode(),
                maxlen=self.max_len,
                approximate=True,
            )
        return pipe.execute()

    def create_group(
        self, topic_id: str, partition_count: int, group: str, *, from_start: bool
    ) -> None:
        """Create `group` on every partition (at the tip, or at the start when `from_start`)."""
        start, entries_read = ("0", 0) if from_start else ("$", None)
        for key in self.keys.streams(topic_id, partition_count):
            try:
                self.redis.xgroup_create(
                    key, group, id=start, mkstream=True, entries_read=entries_read
                )
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    def partition_stats(self, topic_id: str, partition_count: int) -> list[PartitionStats]:
        """Length, offsets and per-group lag/pending of every partition (missing = empty)."""
        pipe = self.redis.pipeline(transaction=False)
        keys = self.keys.streams(topic_id, partition_count)
        for key in keys:
            pipe.xinfo_stream(key)
            pipe.xinfo_groups(key)
        replies = pipe.execute(raise_on_error=False)
        return [
            _partition_stats(p, replies[2 * p], replies[2 * p + 1]) for p in range(len(keys))
        ]

    def purge(self, topic_id: str, partition_count: int) -> int:
        """Remove every stored entry, keeping the streams and their groups; returns the count."""
        pipe = self.redis.pipeline(transaction=False)
        for key in self.keys.streams(topic_id, partition_count):
            pipe.xtrim(key, maxlen=0, approximate=False)
        return sum(pipe.execute())

    def delete(self, topic_id: str, partition_count: int) -> None:
        self.redis.delete(*self.keys.streams(topic_id, partition_count))


def _partition_stats(partition: int, info: object, groups: object) -> PartitionStats:
    if isinstance(info, ResponseError) or not isinstance(info, dict):
        return PartitionStats(partition, 0, None, None, 0)
    group_list = [] if isinstance(groups, ResponseError) else list(groups or [])
    length = int(info.get("length", 0))
    first = info.get("first-entry")
    last = info.get("last-entry")
    return PartitionStats(
        partition=partition,
        length=length,
        first_offset=first[0] if first else None,
        last_offset=last[0] if last else None,
        entries_added=int(info.get("entries-added", length)),
        groups=[_group_stats(g, length) for g in group_list],
    )


def _group_stats(group: dict, length: int) -> GroupStats:
    lag = group.get("lag")
    # Redis reports no lag when it cannot compute it (e.g. after deletions); fall back to the
    # stream length, an upper bound.
    return GroupStats(name=group["name"], pending=int(group.get("pending", 0)),
                      lag=int(lag) if lag is not None else length)
