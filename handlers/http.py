"""The `http` handler: webhooks, as API.md's Conventions describe them.

POST of the payload (or, with `handler_config.envelope`, the envelope) as JSON to `url`, with
the subscription's `headers` and the `X-MQ-*` headers; `X-MQ-Signature` is
`sha256=<hex HMAC-SHA256 of "<X-MQ-Timestamp>.<body>">` keyed by `handler_config.secret`.
2xx is success; 408, 429, 5xx, timeouts and network errors are retried; any other answer is
permanent. The URL is checked again at delivery time (a name may resolve to a private address
later), and such a delivery fails as permanent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any
from urllib.parse import quote

import httpx

from handlers.base import (
    Delivery,
    HandlerResult,
    PermanentFailure,
    RetryableFailure,
    excerpt,
)
from handlers.urls import WebhookURLError, check_webhook_url
from mq.settings import Settings

DEFAULT_TIMEOUT_MS = 30_000
RETRYABLE_STATUSES = frozenset({408, 429})
#: Connections kept per worker process (shared by its worker threads).
MAX_CONNECTIONS = 100


class HttpHandler:
    """One pooled HTTP client per worker process, shared by its threads."""

    def __init__(self, settings: Settings) -> None:
        self.allow_private = settings.mq_webhook_allow_private
        self.client = httpx.Client(
            limits=httpx.Limits(max_connections=MAX_CONNECTIONS,
                                max_keepalive_connections=MAX_CONNECTIONS),
            follow_redirects=False,
            headers={"User-Agent": "mq-webhooks/1"},
        )

    def deliver(self, config: dict[str, Any], delivery: Delivery) -> HandlerResult:
        url = str(config.get("url", ""))
        try:
            check_webhook_url(url, allow_private=self.allow_private, require_resolution=True)
        except WebhookURLError as exc:
            raise PermanentFailure(f"webhook URL refused: {exc}") from None
        body = json.dumps(_body(config, delivery), ensure_ascii=False,
                          separators=(",", ":")).encode()
        headers = _headers(config, delivery, body)
        timeout = max(1, int(config.get("timeout_ms") or DEFAULT_TIMEOUT_MS)) / 1000
        try:
            response = self.client.post(url, content=body, headers=headers, timeout=timeout)
        except httpx.TimeoutException as exc:
            raise RetryableFailure(f"timed out after {timeout:g}s: {type(exc).__name__}") \
                from None
        except httpx.HTTPError as exc:
            raise RetryableFailure(f"request failed: {type(exc).__name__}: {exc}") from None
        status = response.status_code
        text = excerpt(response.content)
        if 200 <= status < 300:
            return HandlerResult(status, text)
        message = f"HTTP {status}"
        if status in RETRYABLE_STATUSES or status >= 500:
            raise RetryableFailure(message, status=status, excerpt=text)
        raise PermanentFailure(message, status=status, excerpt=text)

    def close(self) -> None:
        self.client.close()


def _body(config: dict[str, Any], delivery: Delivery) -> Any:
    if not config.get("envelope"):
        return delivery.payload
    return {
        "message_id": delivery.message_id,
        "topic": delivery.topic,
        "partition": delivery.partition,
        "offset": delivery.offset,
        "key": delivery.key,
        "headers": delivery.headers,
        "payload": delivery.payload,
        "published_at": _iso(delivery.published_ms),
        "attempt": delivery.attempt,
    }


def _headers(config: dict[str, Any], delivery: Delivery, body: bytes) -> dict[str, str]:
    headers = {str(k): str(v) for k, v in (config.get("headers") or {}).items()}
    timestamp = str(int(time.time()))
    headers.update({
        "Content-Type": "application/json",
        "X-MQ-Message-Id": delivery.message_id,
        "X-MQ-Topic": delivery.topic,
        "X-MQ-Attempt": str(delivery.attempt),
        "X-MQ-Timestamp": timestamp,
    })
    optional = {"X-MQ-Key": delivery.key, "X-MQ-Correlation-Id": delivery.correlation_id,
                "X-MQ-Trace-Id": delivery.trace_id}
    headers.update({name: _header_text(value) for name, value in optional.items() if value})
    secret = config.get("secret")
    if secret:
        digest = hmac.new(str(secret).encode(), timestamp.encode() + b"." + body,
                          hashlib.sha256).hexdigest()
        headers["X-MQ-Signature"] = f"sha256={digest}"
    return headers


def _header_text(value: str) -> str:
    """Header values must be ASCII: anything else is percent-encoded (UTF-8)."""
    return value if value.isascii() else quote(value, safe="")


def _iso(ms: int) -> str:
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"
