"""Checks that a topic's message format, compression and encryption can actually be served."""

from __future__ import annotations

from typing import Any

from api.services import services
from broker.codec import AES_GCM, DecodingError, avro_schema_of, decode
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
    if message_format == "avro" and avro_schema_of(fields.get("schema_definition")) is None:
        problem = "message_format avro needs an Avro schema in schema_definition"
        raise ValidationError(problem, {"message_format": [problem]})
    if fields.get("encryption") == AES_GCM:
        settings = services().settings
        if cached_keyring(settings.mq_master_key, settings.mq_old_master_keys) is None:
            problem = ("encryption aes-256-gcm needs the operator to configure MQ_MASTER_KEY; "
                       "none is configured")
            raise ValidationError(problem, {"encryption": [problem]})

#: The topic fields `check_codec` reads.
CODEC_FIELDS = ("message_format", "schema_definition", "encryption")


def shown_payload(record: Any, topic: Any) -> tuple[Any, dict[str, Any]]:
    """A stored message's payload and headers in plaintext, for its own tenant.

    A stored form that cannot be decoded (tampered, or its key is gone) is shown as stored.
    """
    settings = services().settings
    keyring = cached_keyring(settings.mq_master_key, settings.mq_old_master_keys)
    schema = avro_schema_of(topic.schema_definition) if topic is not None else None
    try:
        return decode(keyring, record.tenant_id, record.message_id, record.payload,
                      record.headers, schema)
    except (DecryptError, DecodingError):
        return record.payload, record.headers or {}
