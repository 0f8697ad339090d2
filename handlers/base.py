"""The handler contract: what a handler is given, and how it reports the outcome.

A handler delivers one message to one subscription's target. It returns a `HandlerResult` on
success and raises `RetryableFailure` (try again after the backoff) or `PermanentFailure`
(dead-letter at once) otherwise; any other exception counts as retryable. Handlers know
nothing of Redis, dramatiq or the database: the worker turns outcomes into acks, retries and
dead letters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

#: How much of a response body is kept in the delivery record.
EXCERPT_BYTES = 1024


@dataclass(frozen=True)
class Delivery:
    """One attempt to deliver one message to one subscription."""

    subscription_id: str
    message_id: str
    topic: str
    partition: int
    offset: str
    payload: Any
    published_ms: int
    attempt: int
    key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    correlation_id: str | None = None
    trace_id: str | None = None


@dataclass(frozen=True)
class HandlerResult:
    status: int | None = None
    excerpt: str | None = None


class HandlerFailure(Exception):
    """A failed attempt, with what the target answered (if it answered)."""

    reason = "error"

    def __init__(self, message: str, *, status: int | None = None,
                 excerpt: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.excerpt = excerpt


class RetryableFailure(HandlerFailure):
    """Worth trying again (timeouts, 408/429/5xx, network errors)."""


class PermanentFailure(HandlerFailure):
    """Trying again cannot help (e.g. a 4xx answer): dead-letter at once with `reason`."""

    reason = "permanent"

    def __init__(self, message: str, *, reason: str = "permanent", status: int | None = None,
                 excerpt: str | None = None) -> None:
        super().__init__(message, status=status, excerpt=excerpt)
        self.reason = reason


class Handler(Protocol):
    def deliver(self, config: dict[str, Any], delivery: Delivery) -> HandlerResult: ...

    def close(self) -> None: ...


def excerpt(data: bytes) -> str:
    return data[:EXCERPT_BYTES].decode("utf-8", "replace")
