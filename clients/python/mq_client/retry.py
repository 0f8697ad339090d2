"""When a call is sent again: the one retry policy of the sync and the async client.

A call is retried when the service asks for it — `429` (a quota) and `503` (its database or
Redis unreachable) — after the `Retry-After` it sends, or else after an exponential backoff;
and after a network failure (connection refused, reset or dropped, a timeout) when sending it
again cannot do it twice: every publish carries a `message_id` the service deduplicates on,
and reads, updates and deletes are idempotent. Other calls (creating a topic or a
subscription) are sent again only when the connection was never made. Attempts are bounded.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import httpx

from mq_client.errors import retry_after_seconds


@dataclass(frozen=True)
class RetryPolicy:
    """`max_attempts` counts the first try (1: never retry). The n-th retry waits
    `min(backoff_s * 2**(n-1), max_backoff_s)`, or the answer's `Retry-After`; up to
    `jitter` of the wait is added at random (never taken off, so a `Retry-After` is always
    honoured). An answer asking for more than `max_retry_after_s` is not waited for: its
    error is raised at once."""

    max_attempts: int = 5
    backoff_s: float = 0.1
    max_backoff_s: float = 5.0
    max_retry_after_s: float = 60.0
    jitter: float = 0.1
    retry_statuses: frozenset[int] = frozenset({429, 503})

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (1 for the first)."""
        return min(self.backoff_s * 2 ** (attempt - 1), self.max_backoff_s)

    def after_response(self, attempt: int, response: httpx.Response) -> float | None:
        """Seconds to wait before sending again after `response`, or None to take it."""
        if response.status_code not in self.retry_statuses or attempt >= self.max_attempts:
            return None
        hinted = retry_after_seconds(response)
        if hinted is None:
            return self._jittered(self.backoff(attempt))
        return self._jittered(hinted) if hinted <= self.max_retry_after_s else None

    def after_error(self, attempt: int, error: httpx.TransportError, *,
                    idempotent: bool) -> float | None:
        """Seconds to wait before sending again after a network failure, or None to give up."""
        if attempt >= self.max_attempts or isinstance(error, httpx.UnsupportedProtocol):
            return None
        never_sent = isinstance(error, httpx.ConnectError | httpx.ConnectTimeout)
        if not (idempotent or never_sent):
            return None
        return self._jittered(self.backoff(attempt))

    def _jittered(self, seconds: float) -> float:
        return seconds * (1 + random.random() * self.jitter)
