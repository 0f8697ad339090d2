"""Key material for encryption at rest.

Master keys come from `MQ_MASTER_KEY` (the current key) and `MQ_OLD_MASTER_KEYS` (retired keys,
comma separated), each at least 32 random bytes given as 64+ hex digits or base64. The key id
of a master key is the first 8 hex digits of its SHA-256: a ciphertext names the key id it was
made with, so after a rotation (the old current key moved to `MQ_OLD_MASTER_KEYS`) old
ciphertexts still decrypt while new ones use the new key.

Per-tenant data keys: HKDF-SHA256 of the master key, info = `tenant id` + `:` + `key id`,
32 bytes (AES-256). Each encryption uses AES-256-GCM with a fresh random 96-bit nonce and the
caller's associated data (the message id), so a ciphertext moved to another message or tenant
fails authentication.

A token is the text `<key id>.<base64 nonce>.<base64 ciphertext+tag>`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Sequence
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MIN_KEY_BYTES = 32
NONCE_BYTES = 12
_HEX = re.compile(r"^[0-9a-fA-F]{64,}$")


class DecryptError(Exception):
    """A ciphertext that cannot be decrypted: tampered, malformed or of an unknown key."""


def parse_master_key(text: str) -> bytes:
    """The bytes of a master key given as hex (64+ digits) or base64; ValueError if too short."""
    text = text.strip()
    if _HEX.match(text):
        raw = bytes.fromhex(text) if len(text) % 2 == 0 else b""
    else:
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
    if len(raw) < MIN_KEY_BYTES:
        raise ValueError(f"a master key must be at least {MIN_KEY_BYTES} random bytes, "
                         "given as 64+ hex digits or base64")
    return raw


def key_id(master: bytes) -> str:
    return hashlib.sha256(master).hexdigest()[:8]


@lru_cache(maxsize=4096)
def _tenant_key(master: bytes, tenant_id: str, kid: str) -> AESGCM:
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                   info=f"{tenant_id}:{kid}".encode()).derive(master)
    return AESGCM(derived)


class Keyring:
    """The current master key (encrypts) and every known one (decrypts), by key id."""

    def __init__(self, current: bytes, old: Sequence[bytes] = ()) -> None:
        self.current_id = key_id(current)
        self.masters = {key_id(k): k for k in (*old, current)}

    @classmethod
    def from_texts(cls, current: str | None, old: Sequence[str] = ()) -> Keyring | None:
        """None when no current key is configured (encrypted topics are then refused)."""
        if not current:
            return None
        return cls(parse_master_key(current), [parse_master_key(k) for k in old if k.strip()])

    def encrypt(self, tenant_id: str, associated: bytes, data: bytes) -> str:
        nonce = os.urandom(NONCE_BYTES)
        aead = _tenant_key(self.masters[self.current_id], tenant_id, self.current_id)
        sealed = aead.encrypt(nonce, data, associated)
        return ".".join((self.current_id, _b64(nonce), _b64(sealed)))

    def decrypt(self, tenant_id: str, associated: bytes, token: str) -> bytes:
        try:
            kid, nonce, sealed = token.split(".")
            master = self.masters[kid]
            aead = _tenant_key(master, tenant_id, kid)
            return aead.decrypt(base64.b64decode(nonce), base64.b64decode(sealed), associated)
        except KeyError:
            raise DecryptError("the ciphertext's key id is not among the known master keys") \
                from None
        except (ValueError, binascii.Error, InvalidTag, AttributeError):
            raise DecryptError("the ciphertext failed authentication") from None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@lru_cache(maxsize=8)
def cached_keyring(current: str | None, old: tuple[str, ...] = ()) -> Keyring | None:
    """One keyring per configuration (settings are frozen; parsing keys once is enough)."""
    return Keyring.from_texts(current, old)
