"""Standard Webhooks signatures, checked by the `standardwebhooks` library as a receiver
would use it, and the rotation of secrets."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from handlers.base import Delivery
from handlers.http import _headers
from handlers.signing import (
    GENERATE,
    PREVIOUS,
    PREVIOUS_UNTIL,
    generate_secret,
    mq_signature,
    new_secret,
    rotated,
    secret_problem,
    secrets_in_use,
    webhook_id,
)

BODY = b'{"total":42,"name":"caf\xc3\xa9"}'


def delivery(attempt: int = 1) -> Delivery:
    return Delivery(subscription_id="sub-1", message_id="m-1", topic="orders", partition=0,
                    offset="1-0", payload={"total": 42}, published_ms=0, attempt=attempt)


def signed(config: dict, attempt: int = 1) -> dict[str, str]:
    return _headers(config, delivery(attempt), BODY, None)


def test_a_generated_secret_verifies_with_the_library_as_given() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 24
    headers = signed({"secret": secret})
    assert Webhook(secret).verify(BODY, headers) == {"total": 42, "name": "café"}
    assert headers["webhook-timestamp"] == headers["X-MQ-Timestamp"]


def test_any_other_secret_verifies_as_its_base64() -> None:
    secret = "plain old secret ✓"
    headers = signed({"secret": secret})
    Webhook(base64.b64encode(secret.encode()).decode()).verify(BODY, headers)


def test_tampering_a_wrong_secret_and_an_old_timestamp_are_rejected() -> None:
    secret = new_secret()
    headers = signed({"secret": secret})
    with pytest.raises(WebhookVerificationError, match="signature"):
        Webhook(secret).verify(BODY.replace(b"42", b"43"), headers)
    with pytest.raises(WebhookVerificationError, match="signature"):
        Webhook(new_secret()).verify(BODY, headers)
    old = {**headers, "webhook-timestamp": str(int(time.time()) - 3600)}
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(BODY, old)


def test_the_webhook_id_is_one_per_message_and_subscription() -> None:
    first, retry = signed({}), signed({}, attempt=3)
    assert first["webhook-id"] == retry["webhook-id"] == webhook_id("sub-1", "m-1")
    assert webhook_id("sub-2", "m-1") != webhook_id("sub-1", "m-1") != webhook_id("sub-1", "m-2")
    assert webhook_id("sub-1", "naïve id").isascii()
    assert "webhook-signature" not in first and "X-MQ-Signature" not in first


def test_during_the_overlap_both_secrets_sign_the_new_one_first() -> None:
    old, new = new_secret(), new_secret()
    now = time.time()
    config = rotated({"type": "http", "secret": new}, {"type": "http", "secret": old}, now, 60)
    assert secrets_in_use(config, now) == [new, old]
    headers = signed(config)
    signatures = headers["webhook-signature"].split(" ")
    assert len(signatures) == 2 and all(s.startswith("v1,") for s in signatures)
    Webhook(old).verify(BODY, headers)  # a receiver that has not rotated yet
    Webhook(new).verify(BODY, headers)
    # X-MQ-Signature uses the new secret only.
    assert headers["X-MQ-Signature"] == mq_signature(new, headers["X-MQ-Timestamp"], BODY)
    # After the overlap, the old one no longer signs.
    assert secrets_in_use(config, now + 61) == [new]


def test_rotation_state_is_kept_while_the_secret_stays_and_dropped_with_it() -> None:
    now = time.time()
    rotating = rotated({"secret": "b"}, {"secret": "a"}, now, 100)
    assert (rotating[PREVIOUS], rotating[PREVIOUS_UNTIL]) == ("a", int(now) + 100)
    # An update that keeps the secret keeps the running overlap...
    assert rotated({"secret": "b"}, rotating, now + 10, 100)[PREVIOUS] == "a"
    # ...a later one after it ended drops it; removing the secret drops everything.
    assert PREVIOUS not in rotated({"secret": "b"}, rotating, now + 200, 100)
    assert rotated({"type": "http"}, rotating, now, 100) == {"type": "http"}
    # A client cannot set the rotation state itself.
    assert PREVIOUS not in rotated({"secret": "a", PREVIOUS: "x"}, {}, now, 100)
    # No overlap asked for: the old secret stops at once.
    assert PREVIOUS not in rotated({"secret": "b"}, {"secret": "a"}, now, 0)


def test_generate_and_invalid_whsec_secrets() -> None:
    config, secret = generate_secret({"type": "http", "secret": GENERATE})
    assert secret is not None and config["secret"] == secret and secret.startswith("whsec_")
    assert generate_secret({"secret": "kept"}) == ({"secret": "kept"}, None)
    assert secret_problem("whsec_not base64!") is not None
    assert secret_problem("whsec_") is not None
    assert secret_problem(new_secret()) is None
    assert secret_problem("anything else") is None


def test_signatures_use_the_time_of_sending() -> None:
    headers = signed({"secret": new_secret()})
    sent = datetime.fromtimestamp(int(headers["webhook-timestamp"]), UTC)
    assert abs((datetime.now(UTC) - sent).total_seconds()) < 5
