"""Checks that a topic's message format, compression and encryption can actually be served."""

from __future__ import annotations

import dataclasses
from typing import Any

from api.auth import principal
from api.schemas import find_schema, parse_subject_reference
from api.services import services
from broker.codec import (
    AES_GCM,
    MARKER,
    Codec,
    DecodingError,
    avro_schema_of,
    decode,
    is_encoded,
    topic_codec,
)
from models import Schema, Topic
from mq.crypto import DecryptError, cached_keyring
from mq.errors import ValidationError

PROTOBUF_UNAVAILABLE = "protobuf needs a registered schema; not available in this edition"


def check_codec(fields: dict[str, Any]) -> None:
    """422 for a format without what it needs, or encryption without a master key.

    `fields` are the topic's fields after the create or update is applied.
    """
    message_format = fields.get("message_format") or "json"
    if message_format == "protobuf":
        raise ValidationError(PROTOBUF_UNAVAILABLE, {"message_format": [PROTOBUF_UNAVAILABLE]})
    if message_format == "avro" and avro_schema_of(fields.get("schema_definition")) is None \
            and _registered_avro(fields.get("schema_subject")) is None:
        problem = ("message_format avro needs an Avro schema: in schema_definition, or a "
                   "schema_subject registered with format avro")
        raise ValidationError(problem, {"message_format": [problem]})
    if fields.get("encryption") == AES_GCM:
        settings = services().settings
        if cached_keyring(settings.mq_master_key, settings.mq_old_master_keys) is None:
            problem = ("encryption aes-256-gcm needs the operator to configure MQ_MASTER_KEY; "
                       "none is configured")
            raise ValidationError(problem, {"encryption": [problem]})

#: The topic fields `check_codec` reads.
CODEC_FIELDS = ("message_format", "schema_definition", "schema_subject", "encryption")


def _registered_avro(reference: str | None) -> Schema | None:
    """The registry version a topic's `schema_subject` names, if it is an Avro schema."""
    parsed = parse_subject_reference(reference) if reference else None
    if parsed is None:
        return None
    row = find_schema(services().db_session(), principal().tenant_id, *parsed)
    return row if row is not None and row.format == "avro" else None


def publish_codec(topic: Topic) -> Codec:
    """The codec a publish uses: an Avro topic bound to a registry subject writes with the
    subject's version it names (the latest unless pinned) and records that schema's id."""
    codec = topic_codec(topic)
    if codec.message_format != "avro" or codec.avro_schema is not None:
        return codec
    row = _registered_avro(topic.schema_subject)
    if row is None:
        return codec
    return dataclasses.replace(codec, avro_schema=row.definition, schema_id=row.id)


def registry_definition(schema_id: str) -> Any:
    """A registered schema's definition by id (None if it is gone)."""
    row = services().db_session().get(Schema, schema_id)
    return row.definition if row is not None else None


def shown_payload(record: Any, topic: Any) -> tuple[Any, dict[str, Any]]:
    """A stored message's payload and headers in plaintext, for its own tenant.

    A stored form that cannot be decoded (tampered, or its key is gone) is shown as stored.
    """
    settings = services().settings
    keyring = cached_keyring(settings.mq_master_key, settings.mq_old_master_keys)
    schema = avro_schema_of(topic.schema_definition) if topic is not None else None
    try:
        return decode(keyring, record.tenant_id, record.message_id, record.payload,
                      record.headers, schema, registry_definition)
    except (DecryptError, DecodingError):
        return record.payload, record.headers or {}


def shown_dead_letters(entries: list[dict[str, Any]], topic_id: str) -> list[dict[str, Any]]:
    """Dead-letter entries with their payload and headers decoded (they are kept encoded at
    rest); an entry that cannot be decoded, e.g. dead-lettered for `decrypt`, is shown as kept.
    """
    if not any(is_encoded(e.get("payload")) or MARKER in (e.get("headers") or {})
               for e in entries):
        return entries
    topic = services().db_session().get(Topic, topic_id)
    if topic is None:
        return entries
    settings = services().settings
    keyring = cached_keyring(settings.mq_master_key, settings.mq_old_master_keys)
    schema = avro_schema_of(topic.schema_definition)
    shown = []
    for entry in entries:
        try:
            payload, headers = decode(keyring, topic.tenant_id, entry["message_id"],
                                      entry.get("payload"), entry.get("headers"), schema,
                                      registry_definition)
        except (DecryptError, DecodingError):
            shown.append(entry)
        else:
            shown.append({**entry, "payload": payload, "headers": headers})
    return shown
