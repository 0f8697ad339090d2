"""The asyncio twin: `AsyncClient` on `httpx.AsyncClient` and `AsyncBatchPublisher`.

The calls, their bodies, the answers' handling, the retry policy and the batching are those
of the sync client (`mq_client._calls`, `mq_client.retry`, `mq_client._batching`); only the
sending loop and the waiting differ.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import Coroutine
from types import TracebackType
from typing import Any

import httpx

from mq_client._batching import (
    DEFAULT_MAX_BYTES,
    MAX_MESSAGES,
    Accumulator,
    Pending,
    after_failure,
    batch_request,
    check_limits,
    fail_all,
    pending,
    settle,
)
from mq_client._calls import Calls, Request, answer, http_options
from mq_client.errors import MQError, NetworkError
from mq_client.retry import RetryPolicy


class AsyncClient(Calls[Coroutine[Any, Any, dict[str, Any]], Coroutine[Any, Any, None]]):
    """`AsyncClient("http://127.0.0.1:3010", api_key)`; every call is awaited
    (`await client.publish("orders", {...})`). Use it as an async context manager, or
    `await client.aclose()`."""

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0,
                 retry: RetryPolicy | None = None, max_connections: int = 100) -> None:
        self.retry = retry or RetryPolicy()
        self.http = httpx.AsyncClient(**http_options(base_url, api_key, timeout, max_connections))

    async def _call(self, request: Request) -> Any:
        sent = request.build(self.http)
        for attempt in itertools.count(1):
            try:
                response = await self.http.send(sent)
            except httpx.TransportError as exc:
                wait = self.retry.after_error(attempt, exc, idempotent=request.idempotent)
                if wait is None:
                    raise NetworkError(f"{request.method} {request.path}: {exc!r}") from exc
            else:
                wait = self.retry.after_response(attempt, response)
                if wait is None:
                    return answer(response)
            await asyncio.sleep(wait)
        raise AssertionError("unreachable")

    def batch_publisher(self, topic: str, max_messages: int = MAX_MESSAGES,
                        max_bytes: int = DEFAULT_MAX_BYTES, linger_ms: float = 5, *,
                        max_in_flight: int = 1) -> AsyncBatchPublisher:
        """An `AsyncBatchPublisher` of `topic` on this client (see there)."""
        return AsyncBatchPublisher(self, topic, max_messages, max_bytes, linger_ms,
                                   max_in_flight=max_in_flight)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await self.aclose()


class AsyncBatchPublisher:
    """The asyncio `BatchPublisher`: `publish()` (a plain call, inside the event loop) queues
    the message and returns an `asyncio.Future` resolving to its id; sender tasks send the
    batches. It does not block a publisher while messages wait: await the futures (or
    `flush()`) now and then to bound them. Close it with `await close()` or `async with`."""

    def __init__(self, client: AsyncClient, topic: str, max_messages: int, max_bytes: int,
                 linger_ms: float, *, max_in_flight: int = 1) -> None:
        check_limits(max_messages, max_bytes, linger_ms)
        self.client = client
        self.topic = topic
        self.max_in_flight = max_in_flight
        self._waiting = Accumulator(max_messages, max_bytes, linger_ms / 1000)
        self._wake = asyncio.Event()
        self._in_flight: dict[int, list[Pending]] = {}
        self._senders: list[asyncio.Task[None]] = []
        self._flushing = 0
        self._closed = False

    def publish(self, payload: Any, **fields: Any) -> asyncio.Future[str]:
        """Queue one message (`fields` as in `publish`); the future resolves to its id."""
        if self._closed:
            raise RuntimeError("publish on a closed AsyncBatchPublisher")
        loop = asyncio.get_running_loop()
        if not self._senders:
            self._senders = [loop.create_task(self._send_loop())
                             for _ in range(self.max_in_flight)]
        future: asyncio.Future[str] = loop.create_future()
        if self._waiting.add(pending(payload, fields, future, loop.time())):
            self._wake.set()
        return future

    async def flush(self) -> None:
        """Send what is waiting now and wait until every message published before is settled."""
        futures: list[Any] = self._waiting.futures() + [
            item.future for batch in self._in_flight.values() for item in batch]
        self._flushing += 1
        self._wake.set()
        try:
            if futures:
                await asyncio.wait(futures)
        finally:
            self._flushing -= 1

    async def close(self) -> None:
        """Send everything waiting, wait for the answers, end the sender tasks."""
        self._closed = True
        self._wake.set()
        if self._senders:
            await asyncio.gather(*self._senders)

    async def __aenter__(self) -> AsyncBatchPublisher:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        await self.close()

    async def _send_loop(self) -> None:
        while (batch := await self._next_batch()) is not None:
            try:
                await self._send(batch)
            finally:
                del self._in_flight[id(batch)]

    async def _next_batch(self) -> list[Pending] | None:
        loop = asyncio.get_running_loop()
        while True:
            now, waiting = loop.time(), self._waiting
            if waiting and (self._closed or self._flushing or waiting.ready(now)):
                batch = waiting.take()
                self._in_flight[id(batch)] = batch
                return batch
            if self._closed:
                return None
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), waiting.due() - now if waiting else None)

    async def _send(self, batch: list[Pending]) -> None:
        parts = deque([batch])
        while parts:
            part = parts.popleft()
            try:
                answer = await self.client._call(batch_request(self.topic, part))
            except MQError as exc:
                parts.extend(after_failure(part, exc))
            except Exception as exc:
                fail_all(part, exc)
            else:
                settle(part, answer)
