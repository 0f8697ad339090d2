"""Topic partition streams: append, consumer groups, statistics, purge and delete."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from redis.client import Pipeline
from redis.exceptions import ResponseError
from redis.typing import EncodableT, FieldT

from broker.connection import RedisClient
from broker.envelope import Envelope
from broker.keys import Keys
from broker.scripts import LuaScript


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
        self._append = LuaScript(redis, "broker", "stream_append")
        self._seek_script = LuaScript(redis, "broker", "group_seek")
        self._create_script = LuaScript(redis, "broker", "group_create")
        self._count_script = LuaScript(redis, "broker", "stream_count")

    def append(self, topic_id: str, partition: int, envelope: Envelope) -> str:
        """XADD one message; returns its entry id (the message's offset)."""
        entry_id = self.redis.xadd(
            self.keys.stream(topic_id, partition),
            _fields(envelope),
            maxlen=self.max_len,
            approximate=True,
        )
        return cast(str, entry_id)  # replies are decoded (`broker.connection`)

    def append_many(self, topic_id: str, items: Sequence[tuple[int, Envelope]]) -> list[str]:
        """XADD several messages in one round trip, in order; returns their entry ids."""
        pipe = self.redis.pipeline(transaction=False)
        for partition, envelope in items:
            pipe.xadd(
                self.keys.stream(topic_id, partition),
                _fields(envelope),
                maxlen=self.max_len,
                approximate=True,
            )
        return pipe.execute()

    def queue_append_marked(self, pipe: Pipeline, topic_id: str, partition: int,
                            entries: Sequence[tuple[str, str]]) -> int:
        """Queue on `pipe` the XADDs of `entries` (record id, entry text) to one partition, each
        with its marker (see `Keys.appended`), in scripts of at most `APPEND_CHUNK` entries.
        Each script answers its entry ids, comma-separated; returns how many were queued."""
        return self.queue_append_to(pipe, self.keys.stream(topic_id, partition), entries)

    def queue_append_to(self, pipe: Pipeline, stream: str,
                        entries: Sequence[tuple[str, str]]) -> int:
        """`queue_append_marked` to a stream given by its key."""
        markers = self.keys.stream_markers(stream)
        queued = 0
        for start in range(0, len(entries), APPEND_CHUNK):
            chunk = json.dumps(entries[start:start + APPEND_CHUNK], ensure_ascii=False,
                               separators=(",", ":"))
            self._append.queue(pipe, [stream, markers], [self.max_len, MARKER_TTL_MS, chunk])
            queued += 1
        return queued

    def appended_offsets(self, refs: Sequence[tuple[str, int, str]]) -> dict[str, str]:
        """Offsets of the records (topic id, partition, record id) whose markers say they were
        appended; records without a marker are left out."""
        by_stream: dict[tuple[str, int], list[str]] = {}
        for topic_id, partition, record_id in refs:
            by_stream.setdefault((topic_id, partition), []).append(record_id)
        if not by_stream:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for (topic_id, partition), record_ids in by_stream.items():
            pipe.hmget(self.keys.appended(topic_id, partition), record_ids)
        found: dict[str, str] = {}
        for record_ids, offsets in zip(by_stream.values(), pipe.execute(), strict=True):
            found.update((rid, off) for rid, off in zip(record_ids, offsets, strict=True) if off)
        return found

    def queue_forget_markers(self, pipe: Pipeline,
                             settled: dict[tuple[str, int], list[str]]) -> None:
        """Queue the deletion of markers whose offsets are committed to their records."""
        for (topic_id, partition), record_ids in settled.items():
            if record_ids:
                pipe.hdel(self.keys.appended(topic_id, partition), *record_ids)

    def create_group(
        self, topic_id: str, partition_count: int, group: str, *, from_start: bool
    ) -> None:
        """Create `group` on every partition (at the tip, or at the start when `from_start`);
        an existing group is left as it is. The group's read counter is set too: without it
        Redis cannot report the lag of a group created at the tip of a non-empty stream."""
        where = "start" if from_start else "end"
        for key in self.keys.streams(topic_id, partition_count):
            self._create_script(keys=[key], args=[group, where])

    def destroy_group(self, topic_id: str, partition_count: int, group: str) -> None:
        """Remove `group` from every partition (missing streams and groups are fine)."""
        pipe = self.redis.pipeline(transaction=False)
        for key in self.keys.streams(topic_id, partition_count):
            pipe.xgroup_destroy(key, group)
        pipe.execute(raise_on_error=False)

    def seek_group(
        self, topic_id: str, partition: int, group: str, start: str | None,
        *, past_end_ok: bool = True,
    ) -> str:
        """Make the first entry with id >= `start` the group's next delivery on `partition`
        (`start=None`: the end, only entries appended later). Returns the group's new last
        delivered id. The group's read counter is set with it (`ENTRIESREAD`) so that Redis
        keeps reporting its lag. A `start` past the stream's last id lands at the end, or
        raises `ValueError` unless `past_end_ok`.
        """
        key = self.keys.stream(topic_id, partition)
        if start is None:
            return self._seek_script(keys=[key], args=[group, "end"])
        info = self._stream_info(key)
        last = parse_entry_id(info["last-generated-id"])
        target = parse_entry_id(start)
        if target > last:
            if not past_end_ok:
                raise ValueError(f"past the last offset of partition {partition}"
                                 f" ({format_entry_id(last)})")
            return self._seek_script(keys=[key], args=[group, "end"])
        trimmed = max(0, info["entries-added"] - info["length"])
        before = self._count_before(key, format_entry_id(target)) if target > (0, 0) else 0
        entries_read = trimmed + before
        last_delivered = format_entry_id(entry_id_before(target))
        return self._seek_script(keys=[key], args=[group, "id", last_delivered, entries_read])

    def _stream_info(self, key: str) -> dict[str, Any]:
        try:
            info = self.redis.xinfo_stream(key)
        except ResponseError:
            return {"last-generated-id": "0-0", "entries-added": 0, "length": 0}
        return {
            "last-generated-id": info.get("last-generated-id") or "0-0",
            "entries-added": int(info.get("entries-added", info.get("length", 0))),
            "length": int(info.get("length", 0)),
        }

    def _count_before(self, key: str, entry_id: str) -> int:
        """How many entries of `key` have ids below `entry_id`, counted in Redis in pages so
        that neither payloads cross the wire nor one call blocks the server for long."""
        count, start = 0, "-"
        while True:
            found, last = self._count_script(keys=[key],
                                             args=[start, f"({entry_id}", COUNT_PAGE])
            count += int(found)
            if int(found) < COUNT_PAGE:
                return count
            start = f"({last}"

    def partition_stats(self, topic_id: str, partition_count: int) -> list[PartitionStats]:
        """Length, offsets and per-group lag/pending of every partition (missing = empty)."""
        return self.partition_stats_of([(topic_id, partition_count)])[0]

    def partition_stats_of(self, topics: Sequence[tuple[str, int]]
                           ) -> list[list[PartitionStats]]:
        """`partition_stats` of several topics (id, partition count) in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for topic_id, partition_count in topics:
            for key in self.keys.streams(topic_id, partition_count):
                pipe.xinfo_stream(key)
                pipe.xinfo_groups(key)
        replies = iter(pipe.execute(raise_on_error=False) if topics else [])
        return [[_partition_stats(p, next(replies), next(replies)) for p in range(count)]
                for _, count in topics]

    def purge(self, topic_id: str, partition_count: int) -> int:
        """Remove every stored entry, keeping the streams and their groups; returns the count."""
        pipe = self.redis.pipeline(transaction=False)
        for key in self.keys.streams(topic_id, partition_count):
            pipe.xtrim(key, maxlen=0, approximate=False)
        return sum(pipe.execute())

    def delete(self, topic_id: str, partition_count: int) -> None:
        self.redis.delete(*self.keys.streams(topic_id, partition_count),
                          *(self.keys.appended(topic_id, p) for p in range(partition_count)))


MAX_ID_PART = 2**64 - 1
#: Entries per append script (its HSET passes two arguments per entry to one call).
APPEND_CHUNK = 1000
#: A marker hash lives this long after its last append: far longer than the outbox sweep
#: takes to look at a record, so only a leak (a publisher killed after committing an offset
#: but before deleting its marker) is ever expired.
MARKER_TTL_MS = 24 * 3600 * 1000

COUNT_PAGE = 10_000

EntryId = tuple[int, int]


def parse_entry_id(text: str) -> EntryId:
    """`"1732725848123-5"` (or `"1732725848123"`, sequence 0) as a comparable pair; raises
    `ValueError` for anything else."""
    ms, sep, seq = text.partition("-")
    if not ms.isdigit() or (sep and not seq.isdigit()) or not ms.isascii() or not seq.isascii():
        raise ValueError(f"not a stream entry id: {text!r}")
    parsed = (int(ms), int(seq) if sep else 0)
    if parsed[0] > MAX_ID_PART or parsed[1] > MAX_ID_PART:
        raise ValueError(f"stream entry id out of range: {text!r}")
    return parsed


def format_entry_id(entry_id: EntryId) -> str:
    return f"{entry_id[0]}-{entry_id[1]}"


def entry_id_before(entry_id: EntryId) -> EntryId:
    """The greatest id below `entry_id` (`0-0` has none and maps to itself)."""
    ms, seq = entry_id
    if seq > 0:
        return ms, seq - 1
    if ms > 0:
        return ms - 1, MAX_ID_PART
    return 0, 0


def _fields(envelope: Envelope) -> dict[FieldT, EncodableT]:
    """The entry's fields, typed as redis-py takes them."""
    return dict(envelope.encode().items())


def _partition_stats(partition: int, info: object, groups: object) -> PartitionStats:
    if isinstance(info, ResponseError) or not isinstance(info, dict):
        return PartitionStats(partition, 0, None, None, 0)
    group_list = groups if isinstance(groups, list) else []
    length = int(info.get("length", 0))
    first = info.get("first-entry")
    last = info.get("last-entry")
    return PartitionStats(
        partition=partition,
        length=length,
        first_offset=first[0] if first else None,
        last_offset=last[0] if last else None,
        entries_added=int(info.get("entries-added", length)),
        groups=[GroupStats(name=g["name"], pending=int(g.get("pending", 0)),
                           lag=group_lag(g, info.get("last-generated-id"), fallback=length))
                for g in group_list],
    )


def group_lag(group: dict, last_generated_id: str | None, *, fallback: int) -> int:
    """A consumer group's lag from `XINFO GROUPS`, checked against the stream's position.

    Redis derives `lag` from counters (`entries-added` - `entries-read`) that a restart from
    the AOF, or a group moved with `SETID`, leaves invalid or stale: a drained group could
    report its pre-crash lag for ever. A group whose last delivered id has reached the
    stream's last generated id has read everything, whatever the counters say; a lag Redis
    cannot compute (`nil`) is taken as `fallback`."""
    delivered = group.get("last-delivered-id")
    if not last_generated_id:
        return 0
    if delivered and stream_id(delivered) >= stream_id(last_generated_id):
        return 0
    lag = group.get("lag")
    return int(lag) if lag is not None else fallback


def stream_id(entry_id: str) -> tuple[int, int]:
    """An entry id ("<ms>-<seq>") as a tuple that orders like the stream."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
