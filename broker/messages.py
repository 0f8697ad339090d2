"""How a dramatiq message is kept in Redis: as text, binary-safe.

Every client of the service decodes replies as UTF-8 text (`broker.connection`), while
dramatiq's encoder may make any bytes (its `PickleEncoder` does). The encoder's bytes are
stored as they are when they are UTF-8 text that does not start with a NUL character (the
JSON encoder's, so the service's own messages pay nothing), else as a NUL character and their
base64: a stored text starting with NUL is always base64, so the two never mix up.
"""

from __future__ import annotations

import base64
from typing import Any

from dramatiq import Message

#: What starts the text of bytes stored as base64.
BINARY = "\x00"


def to_text(data: bytes) -> str:
    if not data.startswith(b"\x00"):
        try:
            return data.decode()
        except UnicodeDecodeError:
            pass
    return BINARY + base64.b64encode(data).decode("ascii")


def from_text(text: str) -> bytes:
    if text.startswith(BINARY):
        return base64.b64decode(text[1:])
    return text.encode()


def encode(message: Message[Any]) -> str:
    """The stored text of `message`, encoded by dramatiq's global encoder."""
    return to_text(message.encode())


def decode(text: str) -> Message[Any]:
    return Message.decode(from_text(text))
