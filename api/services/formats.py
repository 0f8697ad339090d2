"""Message formats as the API sees them: whether a topic's format, compression and
encryption can be served, the codec a publish writes with, and stored messages shown back in
plaintext."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from formats.avro import avro_schema_of
from formats.codec import (
    AES_GCM,
    MARKER,
    SCHEMA_FORMATS,
    Codec,
    DecodingError,
    decode,
    is_encoded,
    topic_codec,
)
from formats.encryption import DecryptError, Keyring, cached_keyring
from models import Schema, Topic
from models.registry import referenced_schema
from mq.errors import ValidationError
from mq.settings import Settings

#: The topic fields `check_codec` reads.
CODEC_FIELDS = ("message_format", "schema_definition", "schema_subject", "encryption")


def keyring(settings: Settings) -> Keyring | None:
    """The process's encryption keys (None without `MQ_MASTER_KEY`)."""
    return cached_keyring(settings.mq_master_key, settings.mq_old_master_keys)


def check_codec(session: Session, settings: Settings, tenant_id: str,
                fields: dict[str, Any]) -> None:
    """422 for a format without the schema it needs, or encryption without a master key.

    `fields` are the topic's fields after the create or update is applied.
    """
    message_format = fields.get("message_format") or "json"

    def registered(fmt: str) -> Schema | None:
        return _registered(session, tenant_id, fields.get("schema_subject"), fmt)

    if message_format == "protobuf" and registered("protobuf") is None:
        problem = ("message_format protobuf needs a schema_subject registered with format "
                   "protobuf (its first message is the payload type)")
        raise ValidationError(problem, {"message_format": [problem]})
    if message_format == "avro" and avro_schema_of(fields.get("schema_definition")) is None \
            and registered("avro") is None:
        problem = ("message_format avro needs an Avro schema: in schema_definition, or a "
                   "schema_subject registered with format avro")
        raise ValidationError(problem, {"message_format": [problem]})
    if fields.get("encryption") == AES_GCM and keyring(settings) is None:
        problem = ("encryption aes-256-gcm needs the operator to configure MQ_MASTER_KEY; "
                   "none is configured")
        raise ValidationError(problem, {"encryption": [problem]})


def _registered(session: Session, tenant_id: str, reference: str | None,
                fmt: str) -> Schema | None:
    """The registry version a topic's `schema_subject` names, if it has format `fmt`."""
    row = referenced_schema(session, tenant_id, reference)
    return row if row is not None and row.format == fmt else None


def publish_codec(session: Session, topic: Topic) -> Codec:
    """The codec a publish uses: a topic bound to a registry subject writes with the version
    it names (the latest unless pinned) when its format needs a schema."""
    if topic.message_format not in SCHEMA_FORMATS:
        return topic_codec(topic)
    return topic_codec(topic, referenced_schema(session, topic.tenant_id, topic.schema_subject))


def shown_payload(session: Session, settings: Settings, record: Any,
                  topic: Any) -> tuple[Any, dict[str, Any]]:
    """A stored message's payload and headers in plaintext, for its own tenant."""
    schema = avro_schema_of(topic.schema_definition) if topic is not None else None
    return _shown(session, settings, record.tenant_id, record.message_id, record.payload,
                  record.headers, schema)


def shown_dead_letters(session: Session, settings: Settings, entries: list[dict[str, Any]],
                       topic_id: str) -> list[dict[str, Any]]:
    """Dead-letter entries with their payload and headers decoded (they are kept encoded at
    rest); an entry that cannot be decoded, e.g. dead-lettered for `decrypt`, is shown as kept.
    """
    if not any(is_encoded(e.get("payload")) or MARKER in (e.get("headers") or {})
               for e in entries):
        return entries
    topic = session.get(Topic, topic_id)
    if topic is None:
        return entries
    schema = avro_schema_of(topic.schema_definition)
    shown = []
    for entry in entries:
        payload, headers = _shown(session, settings, topic.tenant_id, entry["message_id"],
                                  entry.get("payload"), entry.get("headers"), schema)
        shown.append({**entry, "payload": payload, "headers": headers})
    return shown


def _shown(session: Session, settings: Settings, tenant_id: str, message_id: str, payload: Any,
           headers: dict[str, Any] | None, schema: Any) -> tuple[Any, dict[str, Any]]:
    """Decoded payload and headers; a stored form that cannot be decoded (tampered, or its
    key is gone) is shown as stored."""
    try:
        return decode(keyring(settings), tenant_id, message_id, payload, headers, schema,
                      _registry_definition(session))
    except (DecryptError, DecodingError):
        return payload, headers or {}


def _registry_definition(session: Session) -> Callable[[str], Any]:
    """A registered schema's definition by id (None if it is gone)."""

    def definition(schema_id: str) -> Any:
        row = session.get(Schema, schema_id)
        return row.definition if row is not None else None

    return definition
