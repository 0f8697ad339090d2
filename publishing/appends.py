"""Step 2 of a group (see `publishing.group`): one pipelined Redis round trip that appends
every new entry to its partition stream (marking its record as appended), parks every delayed
message, deletes the markers of offsets now committed and counts the topics' publish rates.

With `REDIS_WAIT_REPLICAS` > 0 the round trip ends with a `WAIT` on every server written to
(on the connection that wrote, as `WAIT` requires); a server whose replicas did not all
acknowledge in time fails the group's answers with `ReplicasBehind` (503), though what was
appended stays appended: the client's retry with the same message ids finds it stored."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from redis.exceptions import RedisError

from broker.connection import RedisClient, is_cluster
from broker.delays import DelaySet
from broker.rates import Rates
from broker.streams import TopicStreams
from mq.errors import ReplicasBehind
from publishing.jobs import StreamRef
from publishing.messages import Prepared
from publishing.records import StoredRecord

log = logging.getLogger(__name__)

#: record id -> offset of what reached Redis (None for a parked message).
Appended = dict[str, str | None]


class GroupAppender:
    """The Redis side of a group of publishes."""

    def __init__(self, redis: RedisClient, streams: TopicStreams, delays: DelaySet,
                 rates: Rates, *, wait_replicas: int = 0, wait_timeout_ms: int = 1000) -> None:
        self.redis = redis
        self.streams = streams
        self.delays = delays
        self.rates = rates
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms

    def append(self, new: list[Prepared], settled: dict[StreamRef, list[str]]
               ) -> tuple[Appended, BaseException | None]:
        """One round trip for `new` (and the `settled` markers to delete). Returns what
        reached Redis, and why the rest did not (None if all did)."""
        by_stream: dict[StreamRef, list[Prepared]] = {}
        parked: list[Prepared] = []
        for item in new:
            if item.due_ms is None:
                by_stream.setdefault((item.topic_id, item.partition), []).append(item)
            else:
                parked.append(item)
        pipe = self.redis.pipeline(transaction=False)
        scripts = [(items, self.streams.queue_append_marked(
            pipe, topic_id, partition, [(p.record_id, p.entry) for p in items]))
            for (topic_id, partition), items in by_stream.items()]
        for item in parked:
            self.delays.queue_park(pipe, item.record_id, item.due_ms or 0, item.topic_id,
                                   item.partition, item.envelope)
        self.streams.queue_forget_markers(pipe, settled)
        self._queue_rates(pipe, new)
        waits = self._queue_waits(pipe, list(by_stream), bool(parked)) if self.wait_replicas else 0
        try:
            replies = pipe.execute(raise_on_error=False) if len(pipe) else []
        except RedisError as exc:
            return self._after_failure(new, exc)
        behind = self._replicas_behind(replies[len(replies) - waits:]) if waits else None
        appended: Appended = {}
        failure: BaseException | None = None
        position = 0
        for items, count in scripts:
            offsets: list[str] = []
            for reply in replies[position:position + count]:
                if isinstance(reply, BaseException):
                    failure = reply
                else:
                    offsets += reply.split(",")
            position += count
            if len(offsets) == len(items):
                appended.update((p.record_id, off) for p, off in zip(items, offsets, strict=True))
        for item, reply in zip(parked, replies[position:position + len(parked)], strict=True):
            if isinstance(reply, BaseException):
                failure = reply
            else:
                appended[item.record_id] = None
        if failure is not None:
            return self._after_failure(new, failure, appended)
        return appended, behind

    def _queue_waits(self, pipe: Any, appended_to: list[StreamRef], parked: bool) -> int:
        """Queue a `WAIT` for each server written to (the streams `appended_to`, and the delay
        set when messages were `parked`); returns how many."""
        written = [self.streams.keys.stream(*ref) for ref in appended_to]
        written += [self.delays.keys.delayed()] if parked else []
        if not written:
            return 0
        wait = ("WAIT", self.wait_replicas, self.wait_timeout_ms)
        if not is_cluster(self.redis):
            pipe.execute_command(*wait)
            return 1
        nodes = {node.name: node for node in map(self.redis.get_node_from_key, written)}
        for node in nodes.values():
            pipe.execute_command(*wait, target_nodes=node)
        return len(nodes)

    def _replicas_behind(self, acks: list[Any]) -> ReplicasBehind | None:
        short = [ack for ack in acks if isinstance(ack, BaseException) or ack < self.wait_replicas]
        if not short:
            return None
        return ReplicasBehind(f"the message reached Redis but not {self.wait_replicas} "
                              f"replica(s) within {self.wait_timeout_ms} ms; retry with the "
                              "same message_id")

    def _after_failure(self, new: list[Prepared], failure: BaseException,
                       appended: Appended | None = None) -> tuple[Appended, BaseException]:
        """Find out what reached Redis nonetheless (from the markers)."""
        appended = dict(appended or {})
        with contextlib.suppress(RedisError):  # Redis is gone: nothing more reached it
            appended.update(self.marked_offsets(
                [p for p in new if p.due_ms is None and p.record_id not in appended]))
        log.warning("redis refused %d of %d messages: %s", len(new) - len(appended), len(new),
                    failure)
        return appended, failure

    def marked_offsets(self, items: Sequence[Prepared | StoredRecord]) -> dict[str, str]:
        """record id -> offset of the messages whose markers say they were appended."""
        return self.streams.appended_offsets(
            [(p.topic_id, p.partition, p.record_id) for p in items])

    def forget_markers(self, settled: dict[StreamRef, list[str]]) -> None:
        """Delete the markers of durably committed offsets (best effort: they expire)."""
        pipe = self.redis.pipeline(transaction=False)
        self.streams.queue_forget_markers(pipe, settled)
        try:
            pipe.execute()
        except RedisError:
            log.warning("markers of %d settled offsets left to expire",
                        sum(len(ids) for ids in settled.values()))

    def _queue_rates(self, pipe: Any, new: list[Prepared]) -> None:
        per_topic: dict[str, list[int]] = {}
        for item in new:
            if item.due_ms is None:
                tally = per_topic.setdefault(item.topic_id, [0, 0])
                tally[0] += 1
                tally[1] += item.row["payload_size"]
        for topic_id, (count, size) in per_topic.items():
            self.rates.queue_published(pipe, topic_id, count, size)
