"""`BatchPublisher`: publishes from many threads gathered into batch requests.

`publish()` encodes the message, queues it and returns a `concurrent.futures.Future` at once;
a sender thread sends the queued messages as one `POST /topics/{name}/publish` of up to
`max_messages` messages and `max_bytes` bytes when that much is waiting, or `linger_ms` after
the oldest waiting message was published, whichever comes first. While a batch is in flight
the next one fills, so under load batches grow by themselves and a thread pays a request for
a thousand messages. Each future resolves to the message's id, or to the exception that
failed it (after the client's retries: a retried batch is deduplicated by the service on the
messages' ids).
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
from collections import deque
from types import TracebackType
from typing import TYPE_CHECKING, Any

from mq_client._batching import (
    Accumulator,
    Pending,
    after_failure,
    batch_request,
    check_limits,
    fail_all,
    pending,
    settle,
)
from mq_client.errors import MQError

if TYPE_CHECKING:
    from mq_client.client import Client


class BatchPublisher:
    """Made by `Client.batch_publisher(topic, ...)`; thread-safe. `max_in_flight` batches
    may be sent at once (more than 1 gives up the order of messages between batches);
    `publish()` blocks while `max_queued` messages wait. Close it (or use it as a context
    manager): `close()` sends what is waiting and waits for the answers."""

    def __init__(self, client: Client, topic: str, max_messages: int, max_bytes: int,
                 linger_ms: float, *, max_in_flight: int = 1, max_queued: int = 100_000
                 ) -> None:
        check_limits(max_messages, max_bytes, linger_ms)
        self.client = client
        self.topic = topic
        self.max_queued = max(max_queued, max_messages)
        self._waiting = Accumulator(max_messages, max_bytes, linger_ms / 1000)
        self._lock = threading.Condition()
        self._in_flight: dict[int, list[Pending]] = {}
        self._flushing = 0
        self._closed = False
        self._senders = [threading.Thread(target=self._send_loop, daemon=True,
                                          name=f"mq-batch-{topic}-{n}")
                         for n in range(max_in_flight)]
        for sender in self._senders:
            sender.start()

    def publish(self, payload: Any, **fields: Any) -> concurrent.futures.Future[str]:
        """Queue one message (`fields` as in `Client.publish`); the future resolves to its id."""
        future: concurrent.futures.Future[str] = concurrent.futures.Future()
        item = pending(payload, fields, future, time.monotonic())
        with self._lock:
            while len(self._waiting) >= self.max_queued and not self._closed:
                self._lock.wait()
            if self._closed:
                raise RuntimeError("publish on a closed BatchPublisher")
            if self._waiting.add(item):
                self._lock.notify_all()
        return future

    def flush(self, timeout: float | None = None) -> None:
        """Send what is waiting now, without lingering, and wait until every message published
        before the call is settled (or `timeout` s)."""
        with self._lock:
            futures: list[Any] = self._waiting.futures() + [
                item.future for batch in self._in_flight.values() for item in batch]
            self._flushing += 1
            self._lock.notify_all()
        try:
            concurrent.futures.wait(futures, timeout)
        finally:
            with self._lock:
                self._flushing -= 1

    def close(self) -> None:
        """Send everything waiting, wait for the answers, stop the sender threads. Idempotent."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
        for sender in self._senders:
            sender.join()

    def __enter__(self) -> BatchPublisher:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    # --- the sender threads -----------------------------------------------------------------

    def _send_loop(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._send(batch)
            finally:
                with self._lock:
                    del self._in_flight[id(batch)]
                    self._lock.notify_all()

    def _next_batch(self) -> list[Pending] | None:
        """The next batch once one is due; None once closed with nothing waiting."""
        with self._lock:
            while True:
                now = time.monotonic()
                waiting = self._waiting
                if waiting and (self._closed or self._flushing or waiting.ready(now)):
                    batch = waiting.take()
                    self._in_flight[id(batch)] = batch
                    self._lock.notify_all()  # publishers waiting for room
                    return batch
                if self._closed:
                    return None
                self._lock.wait(waiting.due() - now if waiting else None)

    def _send(self, batch: list[Pending]) -> None:
        """Send `batch`, again in parts where a failure names only some of its messages."""
        parts = deque([batch])
        while parts:
            part = parts.popleft()
            try:
                answer = self.client._call(batch_request(self.topic, part))
            except MQError as exc:
                parts.extend(after_failure(part, exc))
            except Exception as exc:  # a bug or an unexpected answer: fail, keep the thread
                fail_all(part, exc)
            else:
                settle(part, answer)
