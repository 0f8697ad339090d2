"""Message formats, compression and encryption at rest for a topic's messages.

A topic with the defaults (`json`, no compression, no encryption) stores payloads and headers
as they are. Any other topic stores, in the stream envelope and in the `message_records` JSON
columns alike:

- payload: `{"$mq": {"f": <format>, "z": <compression>, "e": <encryption>, "d": <data>}}`
  where the bytes are: the payload encoded in the format (`json` UTF-8, `msgpack`, `avro`
  schemaless with the topic's Avro schema, `protobuf` wire format of the first message of the
  topic's registered `.proto`, see `formats.protobuf`), then compressed (`gzip` or `zstd`, see
  `formats.compression`), then, when encrypted, sealed with AES-256-GCM (`formats.encryption`,
  associated data = the message id); `d` is the base64 text of those bytes, or the
  `formats.encryption` token when encrypted; `s`, for
  Avro or protobuf written with a schema-registry version, is that schema's id (readers use that
  very version).
- headers, when encrypted: `{"$mq": <token>}` of their JSON (associated data = the message id
  followed by `/headers`). The message key stays clear: it routes to a partition.

The marker is self-describing, so decoding needs only the keyring and, for Avro and protobuf,
the writer's schema.
Dead-letter entries keep the encoded form (the payload stays ciphertext at rest); the API
decodes when it shows a message to its tenant.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import msgpack

from formats import avro, protobuf
from formats.compression import UnknownCompression, compress, decompress
from formats.encryption import DecryptError, Keyring

MARKER = "$mq"
FORMATS = ("json", "msgpack", "avro", "protobuf")
SCHEMA_FORMATS = ("avro", "protobuf")  # formats that encode with a schema
AES_GCM = "aes-256-gcm"
_HEADERS_AAD = b"/headers"


class EncodingError(Exception):
    """A payload that cannot be encoded in the topic's format."""


class DecodingError(Exception):
    """A stored payload that cannot be decoded (corrupt, or of an unknown format)."""


@dataclass(frozen=True)
class Codec:
    """How one topic's messages are stored; `plain` ones are stored unchanged."""

    message_format: str = "json"
    compression: str = "none"
    encryption: str = "none"
    schema: Any = None  # the writer's schema: an Avro definition, or `.proto` text
    schema_id: str | None = None  # the registry schema `schema` came from, if any

    @property
    def plain(self) -> bool:
        return (self.message_format, self.compression, self.encryption) == ("json", "none",
                                                                           "none")

    def encode(self, keyring: Keyring | None, tenant_id: str, message_id: str, payload: Any,
               headers: dict[str, str]) -> tuple[Any, dict[str, Any]]:
        """(stored payload, stored headers); EncodingError if the payload does not fit."""
        if self.plain:
            return payload, headers
        data = compress(self.compression, _serialize(self, payload))
        marker: dict[str, Any] = {"f": self.message_format, "z": self.compression}
        if self.schema_id is not None:
            marker["s"] = self.schema_id
        if self.encryption == AES_GCM:
            if keyring is None:
                raise EncodingError("the topic is encrypted but no master key is configured")
            marker.update(e=AES_GCM, d=keyring.encrypt(tenant_id, message_id.encode(), data))
            if headers:
                sealed = keyring.encrypt(tenant_id, message_id.encode() + _HEADERS_AAD,
                                         json.dumps(headers).encode())
                headers = {MARKER: sealed}
        else:
            marker["d"] = base64.b64encode(data).decode()
        return {MARKER: marker}, headers


PLAIN = Codec()


def is_encoded(payload: Any) -> bool:
    return isinstance(payload, dict) and len(payload) == 1 and isinstance(payload.get(MARKER),
                                                                          dict)


def is_encrypted(payload: Any, headers: dict[str, Any] | None) -> bool:
    """Whether a stored message holds ciphertext (its payload or its headers)."""
    return (is_encoded(payload) and payload[MARKER].get("e") == AES_GCM) \
        or isinstance((headers or {}).get(MARKER), str)


def decode(keyring: Keyring | None, tenant_id: str, message_id: str, payload: Any,
           headers: dict[str, Any] | None, schema: Any = None,
           schemas: Callable[[str], Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """The plaintext payload and headers of a stored message (unchanged if not encoded).

    `schema` is the topic's inline Avro schema, if any; `schemas` maps a registry schema id to
    its definition: a payload written with a registered schema (`s` in the marker) is read
    with that very version.
    DecryptError when a ciphertext fails authentication; DecodingError when it is corrupt.
    """
    headers = dict(headers or {})
    if isinstance(headers.get(MARKER), str):
        clear = _open(keyring, tenant_id, message_id.encode() + _HEADERS_AAD, headers[MARKER])
        headers = json.loads(clear)
    if not is_encoded(payload):
        return payload, headers
    marker = payload[MARKER]
    if marker.get("s") and schemas is not None:
        schema = schemas(str(marker["s"]))
    if marker.get("e") == AES_GCM:
        data = _open(keyring, tenant_id, message_id.encode(), str(marker.get("d")))
    else:
        try:
            data = base64.b64decode(str(marker.get("d")), validate=True)
        except (binascii.Error, ValueError):
            raise DecodingError("the stored payload is not base64") from None
    try:
        raw = decompress(str(marker.get("z", "none")), data)
        return _deserialize(str(marker.get("f")), raw, schema), headers
    except DecodingError:
        raise
    except UnknownCompression as exc:
        raise DecodingError(str(exc)) from None
    except Exception as exc:  # corrupt data surfaces as many exception types
        raise DecodingError(f"the stored payload cannot be decoded: {exc}") from None


def _open(keyring: Keyring | None, tenant_id: str, associated: bytes, token: str) -> bytes:
    if keyring is None:
        raise DecryptError("no master key is configured to decrypt this message")
    return keyring.decrypt(tenant_id, associated, token)


def _check_finite(value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise EncodingError(f"{value} cannot be encoded")
    if isinstance(value, dict):
        for item in value.values():
            _check_finite(item)
    elif isinstance(value, list):
        for item in value:
            _check_finite(item)


def _serialize(codec: Codec, payload: Any) -> bytes:
    _check_finite(payload)
    match codec.message_format:
        case "json":
            return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        case "msgpack":
            try:
                return msgpack.packb(payload, use_bin_type=True)
            except (TypeError, ValueError, OverflowError) as exc:
                raise EncodingError(f"cannot be encoded as msgpack: {exc}") from None
        case "avro":
            return _avro_bytes(codec.schema, payload)
        case "protobuf":
            return _protobuf_bytes(codec.schema, payload)
    raise EncodingError(f"message format '{codec.message_format}' is not supported")


def _avro_bytes(definition: Any, payload: Any) -> bytes:
    if definition is None:
        raise EncodingError("the topic has no Avro schema")
    try:
        return avro.encode(definition, payload)
    except avro.AvroPayloadError as exc:
        raise EncodingError(f"does not match the topic's Avro schema: {exc}") from None


def _protobuf_bytes(definition: Any, payload: Any) -> bytes:
    if definition is None:
        raise EncodingError("the topic has no protobuf schema")
    try:
        return protobuf.encode(protobuf.compiled(definition), payload)
    except (protobuf.ProtoSchemaError, protobuf.ProtoPayloadError) as exc:
        raise EncodingError(f"does not match the topic's protobuf schema: {exc}") from None


def _deserialize(message_format: str, raw: bytes, schema: Any) -> Any:
    if message_format in SCHEMA_FORMATS and schema is None:
        raise DecodingError(f"no {message_format} schema to decode the stored payload")
    match message_format:
        case "json":
            return json.loads(raw)
        case "msgpack":
            return msgpack.unpackb(raw, raw=False)
        case "avro":
            return avro.decode(schema, raw)
        case "protobuf":
            return protobuf.decode(protobuf.compiled(schema), raw)
    raise DecodingError(f"unknown stored format '{message_format}'")


def topic_codec(topic: Any, registered: Any = None) -> Codec:
    """The codec a topic writes with (`topic`: anything with the topic model's format fields).

    `registered` is the schema-registry version the topic's `schema_subject` names (anything
    with `format`, `definition` and `id`), if any: a protobuf topic, and an Avro topic without
    an inline Avro schema, write with that version and record its id.
    """
    message_format = topic.message_format or "json"
    codec = Codec(message_format=message_format,
                  compression=topic.compression_type or "none",
                  encryption=topic.encryption or "none",
                  schema=avro.avro_schema_of(topic.schema_definition)
                  if message_format == "avro" else None)
    if codec.message_format in SCHEMA_FORMATS and codec.schema is None \
            and registered is not None and registered.format == codec.message_format:
        return replace(codec, schema=registered.definition, schema_id=registered.id)
    return codec
