"""Webhook signatures: our `X-MQ-Signature` and the Standard Webhooks headers, and the
secrets behind them (generated `whsec_` secrets, rotation with an overlap).

Standard Webhooks (https://www.standardwebhooks.com): `webhook-id` names the pair of message and
subscription, the same on every retry and redrive; `webhook-signature` is
`v1,<base64 HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<body>">`, keyed by the
base64-decoded rest of a `whsec_` secret, else by the secret's UTF-8 bytes. While a changed
secret's overlap runs, the header carries the new secret's signature and the old one's.

The rotation state lives in `handler_config` beside `secret`: `previous_secret` and
`previous_secret_until` (Unix seconds). Neither is settable nor ever shown (`HIDDEN`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from typing import Any

SECRET_PREFIX = "whsec_"
#: `"secret": "generate"` asks for a new random secret, answered once.
GENERATE = "generate"
GENERATED_BYTES = 24
PREVIOUS, PREVIOUS_UNTIL = "previous_secret", "previous_secret_until"
HIDDEN = (PREVIOUS, PREVIOUS_UNTIL)


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(GENERATED_BYTES)).decode()


def secret_problem(secret: str) -> str | None:
    """Why a `whsec_` secret cannot key signatures (None: it can)."""
    if not secret.startswith(SECRET_PREFIX):
        return None
    try:
        key = _decoded(secret)
    except (binascii.Error, ValueError):
        return "a whsec_ secret must be base64 after its prefix"
    return None if key else "a whsec_ secret must not be empty"


def signing_key(secret: str) -> bytes:
    return _decoded(secret) if secret.startswith(SECRET_PREFIX) else secret.encode()


def _decoded(secret: str) -> bytes:
    # As the Standard Webhooks libraries read it: padding may be left off.
    return base64.b64decode(secret[len(SECRET_PREFIX):] + "==", validate=True)


def webhook_id(subscription_id: str, message_id: str) -> str:
    """One id per pair of message and subscription: stable across retries and redrives, ASCII
    whatever the message id holds."""
    digest = hashlib.sha256(f"{subscription_id}\x00{message_id}".encode()).hexdigest()
    return f"msg_{digest[:32]}"


def mq_signature(secret: str, timestamp: str, body: bytes) -> str:
    """`X-MQ-Signature`: keyed by the secret's UTF-8 bytes, over `<timestamp>.<body>`."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def standard_signatures(secrets_in_use: list[str], msg_id: str, timestamp: str,
                        body: bytes) -> str:
    """`webhook-signature`: one `v1,` signature per secret, space-separated."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    return " ".join(
        "v1," + base64.b64encode(hmac.new(signing_key(secret), signed, hashlib.sha256)
                                 .digest()).decode()
        for secret in secrets_in_use)


def secrets_in_use(config: dict[str, Any], now: float) -> list[str]:
    """The secret, then the previous one while its overlap runs."""
    secret = config.get("secret")
    if not secret:
        return []
    previous = config.get(PREVIOUS)
    if previous and previous != secret and float(config.get(PREVIOUS_UNTIL) or 0) > now:
        return [str(secret), str(previous)]
    return [str(secret)]


def generate_secret(config: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The config with `"secret": "generate"` replaced by a new secret, and that secret
    (None: nothing was generated)."""
    if config.get("secret") != GENERATE:
        return config, None
    secret = new_secret()
    return {**config, "secret": secret}, secret


def rotated(new: dict[str, Any], old: dict[str, Any], now: float,
            overlap_s: int) -> dict[str, Any]:
    """`new` with the rotation state carried from `old`: a changed secret keeps the old one
    for `overlap_s` seconds; an unchanged one keeps a running overlap; no secret, none."""
    kept = {k: v for k, v in new.items() if k not in HIDDEN}
    secret, old_secret = kept.get("secret"), old.get("secret")
    if not secret:
        return kept
    if old_secret and old_secret != secret and overlap_s > 0:
        return {**kept, PREVIOUS: old_secret, PREVIOUS_UNTIL: int(now) + overlap_s}
    if old_secret == secret and float(old.get(PREVIOUS_UNTIL) or 0) > now:
        return {**kept, PREVIOUS: old[PREVIOUS], PREVIOUS_UNTIL: old[PREVIOUS_UNTIL]}
    return kept
