"""What a dead-letter topic stores of a dead letter."""

from __future__ import annotations

import logging
from dataclasses import replace

from broker.dead_letters import DeadLetterEntry, topic_envelope
from broker.delivery import Route
from broker.envelope import Envelope
from formats.codec import AES_GCM, Codec, DecodingError, EncodingError, is_encrypted
from formats.encryption import DecryptError
from workers.payloads import PayloadDecoder

log = logging.getLogger(__name__)


class DeadLetterMessages:
    """Builds the messages of dead-letter topics."""

    def __init__(self, payloads: PayloadDecoder) -> None:
        self.payloads = payloads

    def build(self, route: Route, envelope: Envelope, entry: DeadLetterEntry,
              codec: Codec) -> Envelope:
        """The entry, in the dead-letter topic's compression and encryption (`codec`), with
        the message decoded so that its subscribers read it as JSON — unless the message was
        encrypted and the dead-letter topic is not (then it stays ciphertext) or it cannot be
        decoded (then it stays as stored)."""
        letter = topic_envelope(self._readable(route, envelope, entry, codec))
        if codec.plain:
            return letter
        try:
            payload, headers = codec.encode(self.payloads.keyring(), route.tenant_id,
                                            letter.message_id, letter.payload, letter.headers)
        except EncodingError:  # an encrypted dead-letter topic, but no master key any more
            log.warning("dead-letter topic %s cannot encode its messages; this one is stored "
                        "as built", route.dead_letter_topic)
            return topic_envelope(entry)
        return replace(letter, payload=payload, headers=headers)

    def _readable(self, route: Route, envelope: Envelope, entry: DeadLetterEntry,
                  codec: Codec) -> DeadLetterEntry:
        if codec.encryption != AES_GCM and is_encrypted(envelope.payload, envelope.headers):
            return entry
        try:
            payload, headers = self.payloads.decoded(route, envelope)
        except (DecryptError, DecodingError):
            return entry
        return replace(entry, payload=payload, headers=headers)
