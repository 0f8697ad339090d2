"""Direct round trips of every format and compression, with and without encryption."""

from __future__ import annotations

import base64
import math
import os

import pytest

from formats.codec import Codec, DecodingError, EncodingError, decode
from formats.encryption import DecryptError, Keyring, parse_master_key

AVRO_ORDER = {"type": "record", "name": "Order", "fields": [
    {"name": "id", "type": "string"}, {"name": "qty", "type": "int"},
    {"name": "tags", "type": {"type": "array", "items": "string"}}]}
ORDER = {"id": "o-1", "qty": 3, "tags": ["a", "é"]}
PROTO_ORDER = """syntax = "proto3";
package shop;
import "google/protobuf/timestamp.proto";
message Order {
  string id = 1;
  int64 qty = 2;
  repeated string tags = 3;
  map<string, double> prices = 4;
  google.protobuf.Timestamp placed_at = 5;
  Status status = 6;
}
enum Status { NEW = 0; PAID = 1; }
"""
PROTO_PAYLOAD = {"id": "o-1", "qty": 2**40, "tags": ["a", "é"], "prices": {"a": 1.5},
                 "placed_at": "2026-11-27T10:00:00Z", "status": "PAID"}
NESTED = {"a": [1, 2.5, None, True], "b": {"c": "ü" * 50}}


def _keyring() -> Keyring:
    return Keyring(os.urandom(32))


@pytest.mark.parametrize("compression", ["none", "gzip", "zstd"])
@pytest.mark.parametrize("encryption", ["none", "aes-256-gcm"])
@pytest.mark.parametrize(("message_format", "payload", "schema"), [
    ("json", NESTED, None), ("json", "text", None), ("msgpack", NESTED, None),
    ("msgpack", [1, "x"], None), ("avro", ORDER, AVRO_ORDER),
    ("protobuf", PROTO_PAYLOAD, PROTO_ORDER)])
def test_round_trip(message_format, payload, schema, compression, encryption):
    codec = Codec(message_format, compression, encryption, schema)
    keyring = _keyring()
    headers = {"x-secret-header": "secret-header-value"}
    stored, stored_headers = codec.encode(keyring, "t1", "m1", payload, headers)
    if not codec.plain:
        assert stored != payload
        assert list(stored) == ["$mq"]
    if encryption != "none":
        assert "secret-header" not in str(stored_headers)
        assert "o-1" not in str(stored) and "text" not in str(stored)
    assert decode(keyring, "t1", "m1", stored, stored_headers, schema) == (payload, headers)


def test_default_topic_stores_payload_unchanged():
    assert Codec().encode(None, "t", "m", {"a": 1}, {"h": "v"}) == ({"a": 1}, {"h": "v"})


def test_each_encryption_uses_a_fresh_nonce():
    codec, keyring = Codec(encryption="aes-256-gcm"), _keyring()
    first, _ = codec.encode(keyring, "t", "m", {"a": 1}, {})
    second, _ = codec.encode(keyring, "t", "m", {"a": 1}, {})
    assert first["$mq"]["d"] != second["$mq"]["d"]


def test_ciphertext_is_bound_to_message_id_and_tenant():
    codec, keyring = Codec(encryption="aes-256-gcm"), _keyring()
    stored, _ = codec.encode(keyring, "t", "m", {"a": 1}, {})
    with pytest.raises(DecryptError):
        decode(keyring, "t", "other-message", stored, {})
    with pytest.raises(DecryptError):
        decode(keyring, "other-tenant", "m", stored, {})


def test_tampered_ciphertext_fails_authentication():
    codec, keyring = Codec(encryption="aes-256-gcm"), _keyring()
    stored, _ = codec.encode(keyring, "t", "m", {"a": 1}, {})
    kid, nonce, sealed = stored["$mq"]["d"].split(".")
    flipped = ("A" if sealed[0] != "A" else "B") + sealed[1:]
    stored["$mq"]["d"] = ".".join((kid, nonce, flipped))
    with pytest.raises(DecryptError):
        decode(keyring, "t", "m", stored, {})


def test_rotated_keys_still_decrypt_old_ciphertexts():
    old, new = os.urandom(32), os.urandom(32)
    codec = Codec(compression="zstd", encryption="aes-256-gcm")
    stored, headers = codec.encode(Keyring(old), "t", "m", {"a": 1}, {"h": "v"})
    rotated = Keyring(new, [old])
    assert decode(rotated, "t", "m", stored, headers) == ({"a": 1}, {"h": "v"})
    fresh, _ = codec.encode(rotated, "t", "m2", {"b": 2}, {})
    assert fresh["$mq"]["d"].split(".")[0] == rotated.current_id != stored["$mq"]["d"][:8]
    with pytest.raises(DecryptError):  # the retired key alone cannot read the new one
        decode(Keyring(old), "t", "m2", fresh, {})


@pytest.mark.parametrize(("message_format", "payload", "schema"), [
    ("avro", "a json string", AVRO_ORDER),
    ("avro", {"id": "o-1", "qty": "three", "tags": []}, AVRO_ORDER),
    ("avro", {"id": "o-1"}, AVRO_ORDER),
    ("msgpack", {"x": math.nan}, None),
    ("msgpack", [math.inf], None),
    ("json", {"x": -math.inf}, None),
    ("protobuf", {"id": 5}, PROTO_ORDER),
    ("protobuf", {"id": "o-1", "colour": "red"}, PROTO_ORDER),
    ("protobuf", {"qty": 2**64}, PROTO_ORDER),
    ("protobuf", ["o-1"], PROTO_ORDER),
    ("protobuf", {"id": "o-1"}, None),
])
def test_payloads_that_do_not_fit_the_format(message_format, payload, schema):
    with pytest.raises(EncodingError):
        Codec(message_format, "gzip", schema=schema).encode(None, "t", "m", payload, {})


def test_encrypting_without_a_keyring_is_refused():
    with pytest.raises(EncodingError):
        Codec(encryption="aes-256-gcm").encode(None, "t", "m", {"a": 1}, {})


def test_corrupt_stored_payload_is_a_decoding_error():
    with pytest.raises(DecodingError):
        decode(None, "t", "m", {"$mq": {"f": "msgpack", "z": "zstd", "d": "bm90IHpzdGQ="}}, {})


@pytest.mark.parametrize("text", ["ab" * 31, "c2hvcnQ=", "not a key at all"])
def test_short_or_malformed_master_keys_are_refused(text):
    with pytest.raises(ValueError):
        parse_master_key(text)


def test_master_keys_as_hex_or_base64():
    raw = os.urandom(32)
    assert parse_master_key(raw.hex()) == raw == parse_master_key(base64.b64encode(raw).decode())


def test_protobuf_is_stored_in_the_wire_format_and_read_back_whole():
    """The stored bytes are the message's wire encoding; a payload that leaves fields out reads
    back with every field (proto3 zero values), as a handler of the type expects."""
    stored, _ = Codec("protobuf", schema=PROTO_ORDER).encode(None, "t", "m", {"id": "o-1"}, {})
    assert base64.b64decode(stored["$mq"]["d"]) == b"\n\x03o-1"  # field 1, length 3
    payload, _ = decode(None, "t", "m", stored, {}, PROTO_ORDER)
    assert payload == {"id": "o-1", "qty": 0, "tags": [], "prices": {}, "status": "NEW"}
    with pytest.raises(DecodingError):  # no schema to read it with
        decode(None, "t", "m", stored, {})
