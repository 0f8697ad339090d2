"""The synchronous client, on `httpx.Client`; safe to share between threads."""

from __future__ import annotations

import itertools
import time
from types import TracebackType
from typing import Any

import httpx

from mq_client._batching import DEFAULT_MAX_BYTES, MAX_MESSAGES
from mq_client._calls import Calls, Request, answer, http_options
from mq_client.batch import BatchPublisher
from mq_client.errors import NetworkError
from mq_client.retry import RetryPolicy


class Client(Calls[dict[str, Any], None]):
    """`Client("http://127.0.0.1:3010", api_key)`: `base_url` is the server's root (the API
    lives under `/api/v1/mq`). Close it, or use it as a context manager."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0,
                 retry: RetryPolicy | None = None, max_connections: int = 100) -> None:
        self.retry = retry or RetryPolicy()
        self.http = httpx.Client(**http_options(base_url, api_key, timeout, max_connections))

    def _call(self, request: Request) -> Any:
        sent = request.build(self.http)
        for attempt in itertools.count(1):
            try:
                response = self.http.send(sent)
            except httpx.TransportError as exc:
                wait = self.retry.after_error(attempt, exc, idempotent=request.idempotent)
                if wait is None:
                    raise NetworkError(f"{request.method} {request.path}: {exc!r}") from exc
            else:
                wait = self.retry.after_response(attempt, response)
                if wait is None:
                    return answer(response)
            time.sleep(wait)
        raise AssertionError("unreachable")

    def batch_publisher(self, topic: str, max_messages: int = MAX_MESSAGES,
                        max_bytes: int = DEFAULT_MAX_BYTES, linger_ms: float = 5, *,
                        max_in_flight: int = 1, max_queued: int = 100_000) -> BatchPublisher:
        """A `BatchPublisher` of `topic` on this client (see there)."""
        return BatchPublisher(self, topic, max_messages, max_bytes, linger_ms,
                              max_in_flight=max_in_flight, max_queued=max_queued)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()
