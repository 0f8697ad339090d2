"""A look at consumer groups for monitoring: lag, pending, the oldest undelivered entry, and
the group's consumers -- summed over a topic's partitions, in two pipelined round trips."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from redis.exceptions import ResponseError

from broker.connection import RedisClient, RedisPipeline
from broker.delivery import entry_ms
from broker.keys import Keys


@dataclass(frozen=True)
class GroupTarget:
    """One subscription group on one topic."""

    topic_id: str
    partition_count: int
    group: str


@dataclass
class GroupView:
    lag: int = 0
    pending: int = 0
    #: Timestamp (ms) of the oldest entry not yet acknowledged or not yet read, if any.
    oldest_ms: int | None = None
    #: Redis consumer names (`<consumer_name>@<worker instance>`) on any partition.
    consumers: set[str] = field(default_factory=set)

    def note_entry(self, entry_id: str | None) -> None:
        if entry_id:
            stamp = entry_ms(entry_id)
            self.oldest_ms = stamp if self.oldest_ms is None else min(self.oldest_ms, stamp)


def inspect_groups(redis: RedisClient, keys: Keys, targets: Sequence[GroupTarget]
                   ) -> dict[tuple[str, str], GroupView]:
    """`(topic_id, group) -> GroupView` for every target (a missing group reads as empty)."""
    streams = sorted({key for t in targets for key in keys.streams(t.topic_id, t.partition_count)})
    pipe = redis.pipeline(transaction=False)
    for key in streams:
        pipe.xinfo_groups(key)
    groups_of = {key: _by_name(reply) for key, reply in
                 zip(streams, pipe.execute(raise_on_error=False), strict=True)}
    views: dict[tuple[str, str], GroupView] = {}
    follow_ups: list[tuple[GroupView, str, int]] = []
    pipe = redis.pipeline(transaction=False)
    for target in targets:
        view = views.setdefault((target.topic_id, target.group), GroupView())
        for key in keys.streams(target.topic_id, target.partition_count):
            info = groups_of.get(key, {}).get(target.group)
            if info is None:
                continue
            _add_group(view, info, key, target.group, pipe, follow_ups)
    for (view, kind, lag), reply in zip(follow_ups, pipe.execute(raise_on_error=False),
                                        strict=True):
        _apply(view, kind, lag, reply)
    return views


def _by_name(reply: object) -> dict[str, dict]:
    if isinstance(reply, ResponseError) or not isinstance(reply, list):
        return {}
    return {g["name"]: g for g in reply}


def _add_group(view: GroupView, info: dict, key: str, group: str, pipe: RedisPipeline,
               follow_ups: list[tuple[GroupView, str, int]]) -> None:
    pending = int(info.get("pending") or 0)
    lag = info.get("lag")
    lag = int(lag) if lag is not None else 0
    view.pending += pending
    view.lag += lag
    if pending:
        pipe.xpending(key, group)
        follow_ups.append((view, "pending", lag))
    if lag:  # also tells a stale lag (`streams.group_lag`): nothing after the last delivered
        pipe.xrange(key, f"({info['last-delivered-id']}", "+", count=1)
        follow_ups.append((view, "unread", lag))
    pipe.xinfo_consumers(key, group)
    follow_ups.append((view, "consumers", lag))


def _apply(view: GroupView, kind: str, lag: int, reply: object) -> None:
    """One follow-up reply; `lag` is what the group's counters claimed."""
    if isinstance(reply, Exception):
        return
    if kind == "pending" and isinstance(reply, dict):
        view.note_entry(reply.get("min"))
    elif kind == "unread" and isinstance(reply, list):
        if reply:
            view.note_entry(reply[0][0])
        else:  # the counters were stale: the group has read everything
            view.lag -= lag
    elif kind == "consumers" and isinstance(reply, list):
        view.consumers.update(c["name"] for c in reply)


def live_consumers(view: GroupView, consumer_name: str, instances: set[str]) -> int:
    """How many of the group's consumers for `consumer_name` belong to live workers."""
    prefix = f"{consumer_name}@"
    return len({name for name in view.consumers
                if name.startswith(prefix) and name[len(prefix):] in instances})
