"""Appending with markers: a record is appended to its stream once, however often asked."""

from __future__ import annotations

import uuid

from redis import Redis

from broker.keys import Keys
from broker.streams import TopicStreams


def test_a_marked_record_is_not_appended_again(redis_client: Redis) -> None:
    keys = Keys(f"streams{uuid.uuid4().hex[:8]}")
    streams = TopicStreams(redis_client, keys, max_len=1000)
    try:
        answers = []
        for entries in ([("r1", '{"id":"a"}')], [("r1", '{"id":"a"}'), ("r2", '{"id":"b"}')]):
            pipe = redis_client.pipeline(transaction=False)
            streams.queue_append_marked(pipe, "topic", 0, entries)
            answers.append(pipe.execute()[0].split(","))
        assert answers[1][0] == answers[0][0]  # r1 keeps the id of its one entry
        assert redis_client.xlen(keys.stream("topic", 0)) == 2
        assert streams.appended_offsets([("topic", 0, "r1"), ("topic", 0, "r2")]) == {
            "r1": answers[0][0], "r2": answers[1][1]}
    finally:
        redis_client.delete(keys.stream("topic", 0), keys.appended("topic", 0))
