"""Preparing messages: the stream entry made with the payload's JSON spliced in is the same
entry as one made from scratch."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.envelope import FIELD, Envelope

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                  max_size=4),
    max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(payload=json_values, key=st.none() | st.text(max_size=5),
       headers=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=3),
       expires=st.none() | st.integers(0, 2**41), content_type=st.sampled_from(
           ["application/json", "text/plain"]))
def test_spliced_payload_gives_the_same_entry(payload, key, headers, expires, content_type):
    envelope = Envelope("m-1", payload, 1_700_000_000_000, key=key, headers=headers,
                        expires_ms=expires, content_type=content_type)
    spliced = envelope.encode_data(json.dumps(payload, ensure_ascii=False,
                                              separators=(",", ":")))
    assert json.loads(spliced) == json.loads(envelope.encode_data())
    assert Envelope.decode({FIELD: spliced}) == envelope
