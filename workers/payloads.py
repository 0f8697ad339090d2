"""Reading stored messages: payloads and headers as the subscriber sees them.

A stored message may be compressed, encrypted (with the key of the topic's owner) or written
with a registry schema; `formats.codec.decode` undoes all of it given the keyring and the
schema definitions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from broker.delivery import Route
from broker.envelope import Envelope
from formats.codec import decode
from formats.encryption import Keyring, cached_keyring
from mq.settings import Settings


class PayloadDecoder:
    """Decodes stored messages for the worker process."""

    def __init__(self, settings: Settings,
                 schemas: Callable[[str], Any] | None = None) -> None:
        self.settings = settings
        self.schemas = schemas  # registry schema id -> definition (Avro, protobuf)

    def keyring(self) -> Keyring | None:
        return cached_keyring(self.settings.mq_master_key, self.settings.mq_old_master_keys)

    def decoded(self, route: Route, envelope: Envelope) -> tuple[Any, dict[str, Any]]:
        """A stored message's plaintext payload and headers, read with the key of the topic's
        owner; DecryptError or DecodingError when it cannot be."""
        return decode(self.keyring(), route.topic_tenant_id or route.tenant_id,
                      envelope.message_id, envelope.payload, envelope.headers,
                      route.avro_schema, self.schemas)
