"""The fast load of publish bodies: whatever it takes as it is, marshmallow loads unchanged."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import Schema, ValidationError

from api.parsing import FastLoad, plain
from api.resources.publish import BatchBody, PublishBody, TopicPublishBody
from api.resources.scheduling import DelayedBody

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                  max_size=4),
    max_leaves=10)
edge_strings = st.text(max_size=3) | st.sampled_from(["", "x" * 100, "x" * 201, "x" * 501])
edge_ints = st.sampled_from([-1, 0, 1, 63, 64, 31_536_000_000, 31_536_000_001, True, False])
field_values = (json_values | edge_strings | edge_ints
                | st.dictionaries(edge_strings, edge_strings | st.integers(), max_size=3))
MESSAGE_KEYS = ["payload", "key", "headers", "message_id", "correlation_id", "trace_id",
                "partition", "content_type", "ttl_ms", "topic", "delay_ms", "unknown"]
messages = st.dictionaries(st.sampled_from(MESSAGE_KEYS), field_values, max_size=6)


def marshmallow_load(schema: Schema, data: Any) -> Any:
    """The schema's load without the fast path."""
    return super(FastLoad, schema).load(data)


def check(schema: Schema, data: Any) -> None:
    if not plain(schema, data):
        return
    try:
        loaded = marshmallow_load(schema, data)
    except ValidationError as exc:
        raise AssertionError(f"taken as plain, but marshmallow refuses it: {exc}") from None
    assert loaded == data


@settings(max_examples=400, deadline=None)
@given(messages)
def test_plain_single_bodies_load_unchanged(data: dict[str, Any]) -> None:
    for schema in (PublishBody(), TopicPublishBody(), DelayedBody()):
        check(schema, data)


@settings(max_examples=200, deadline=None)
@given(st.lists(messages, max_size=4), st.sampled_from(["orders", "", None, 5]),
       st.booleans())
def test_plain_batches_load_unchanged(batch: list[Any], topic: Any, with_options: bool
                                      ) -> None:
    body: dict[str, Any] = {"topic": topic, "messages": batch}
    if with_options:
        body["options"] = {"compression": "gzip"}
    check(BatchBody(), body)
    check(TopicPublishBody(), {"messages": batch})


def test_ordinary_bodies_take_the_fast_path() -> None:
    message = {"payload": {"n": 1.5, "list": [1, None]}, "key": "k", "headers": {"a": "b"},
               "message_id": "m-1", "partition": 0, "ttl_ms": 1000}
    assert plain(PublishBody(), {"topic": "orders", **message})
    assert plain(BatchBody(), {"topic": "orders", "messages": [message] * 1000})
    assert not plain(BatchBody(), {"topic": "orders", "messages": [message] * 1001})
    assert not plain(PublishBody(), {"topic": "orders", **message, "partition": True})
    assert not plain(PublishBody(), {"topic": "orders", **message, "extra": 1})
    assert not plain(PublishBody(), {"payload": 1})  # topic is required
