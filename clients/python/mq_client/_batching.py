"""What the thread and the asyncio batch publishers share: the queue of messages waiting for a
batch, the batch's body, and how an answer (or a failure) settles the messages' futures.

Each message is encoded when it is published, in the publishing thread or task, so a batch's
body is the encoded messages joined, and its size is known before it is sent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from mq_client._calls import Request, encode, message, segment
from mq_client.errors import MQError, PayloadTooLarge

#: The API's largest batch.
MAX_MESSAGES = 1000
#: The contract's limit on a batch (5 MiB), below the service's default MAX_REQUEST_BYTES
#: (6 MiB): a full batch is never refused for its size by a service on its defaults.
DEFAULT_MAX_BYTES = 5 * 1024 * 1024
_HEAD, _TAIL = b'{"messages":[', b"]}"


class Settable(Protocol):
    """A `concurrent.futures.Future[str]` or an `asyncio.Future[str]`."""

    def done(self) -> bool: ...

    def set_result(self, result: str) -> None: ...

    def set_exception(self, exception: BaseException) -> None: ...


@dataclass(slots=True)
class Pending:
    """A published message waiting for its batch's answer."""

    data: bytes
    message_id: str
    future: Settable
    at: float  # when it was published (the clock of its publisher)


def pending(payload: Any, fields: Mapping[str, Any], future: Settable, now: float) -> Pending:
    fields = message(payload, fields)
    return Pending(encode(fields), fields["message_id"], future, now)


def check_limits(max_messages: int, max_bytes: int, linger_ms: float) -> None:
    if not 1 <= max_messages <= MAX_MESSAGES:
        raise ValueError(f"max_messages must be 1-{MAX_MESSAGES}")
    if max_bytes < 1024:
        raise ValueError("max_bytes must be at least 1024")
    if linger_ms < 0:
        raise ValueError("linger_ms must not be negative")


class Accumulator:
    """Messages waiting for a batch, oldest first; not thread-safe (its owner locks)."""

    def __init__(self, max_messages: int, max_bytes: int, linger_s: float) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.linger_s = linger_s
        self.items: deque[Pending] = deque()
        self.size = len(_HEAD) + len(_TAIL)  # of the body holding every waiting message

    def __len__(self) -> int:
        return len(self.items)

    def add(self, item: Pending) -> bool:
        """Queue `item`; True when a sender should look now (the first one, or a full batch)."""
        self.items.append(item)
        self.size += len(item.data) + (1 if len(self.items) > 1 else 0)
        return len(self.items) == 1 or self.full()

    def full(self) -> bool:
        return len(self.items) >= self.max_messages or self.size >= self.max_bytes

    def due(self) -> float:
        """When the oldest waiting message has lingered long enough (needs one waiting)."""
        return self.items[0].at + self.linger_s

    def ready(self, now: float) -> bool:
        return bool(self.items) and (self.full() or now >= self.due())

    def take(self) -> list[Pending]:
        """The oldest messages that fit one batch (at least one, however large)."""
        batch = [self.items.popleft()]
        size = len(_HEAD) + len(_TAIL) + len(batch[0].data)
        while (self.items and len(batch) < self.max_messages
               and size + 1 + len(self.items[0].data) <= self.max_bytes):
            batch.append(self.items.popleft())
            size += 1 + len(batch[-1].data)
        self.size -= size - len(_HEAD) - len(_TAIL) + (1 if self.items else 0)
        return batch

    def futures(self) -> list[Settable]:
        return [item.future for item in self.items]


def batch_request(topic: str, batch: list[Pending]) -> Request:
    body = _HEAD + b",".join(item.data for item in batch) + _TAIL
    return Request("POST", f"/topics/{segment(topic)}/publish", content=body, idempotent=True)


def settle(batch: list[Pending], answer: Any) -> None:
    """Resolve each message's future with its id (the original one for a duplicate)."""
    ids = answer.get("message_ids") if isinstance(answer, dict) else None
    if not isinstance(ids, list) or len(ids) != len(batch):
        error = MQError(f"unexpected answer to a batch of {len(batch)}: {answer!r:.200}")
        for item in batch:
            _fail(item, error)
        return
    for item, message_id in zip(batch, ids, strict=True):
        with contextlib.suppress(*_SETTLED):
            if not item.future.done():
                item.future.set_result(message_id)


def after_failure(batch: list[Pending], error: BaseException) -> list[list[Pending]]:
    """Fail the futures of the messages `error` is about; return the parts of `batch` worth
    sending again. A batch is checked whole, so a refusal naming some of its messages by index
    (`422`, `413`, `400`) published nothing: those fail with their own details and the rest go
    again. A `413` naming none (the request as a whole too large) is split in two."""
    if isinstance(error, MQError) and error.status in BY_INDEX_STATUSES \
            and (bad := _bad_indexes(error, len(batch))):
        for index, details in bad.items():
            _fail(batch[index], _for_message(error, details))
        rest = [item for index, item in enumerate(batch) if index not in bad]
        return [rest] if rest else []
    if isinstance(error, PayloadTooLarge) and len(batch) > 1:
        half = len(batch) // 2
        return [batch[:half], batch[half:]]
    for item in batch:
        _fail(item, error)
    return []


#: Refusals of a whole batch for what some of its messages are.
BY_INDEX_STATUSES = frozenset({400, 413, 422})


def _bad_indexes(error: MQError, count: int) -> dict[int, Any]:
    """The messages a batch's refusal names, by index ({} if it names none)."""
    by_index = error.details.get("messages")
    if not isinstance(by_index, dict):
        return {}
    try:
        bad = {int(index): details for index, details in by_index.items()}
    except (TypeError, ValueError):
        return {}
    return bad if all(0 <= index < count for index in bad) else {}


def _for_message(error: MQError, details: Any) -> MQError:
    return type(error)(error.message, code=error.code, status=error.status,
                       details=details if isinstance(details, dict) else {"message": details},
                       request_id=error.request_id)


_SETTLED = (concurrent.futures.InvalidStateError, asyncio.InvalidStateError)


def _fail(item: Pending, error: BaseException) -> None:
    with contextlib.suppress(*_SETTLED):
        if not item.future.done():
            item.future.set_exception(error)


def fail_all(batch: list[Pending], error: BaseException) -> None:
    for item in batch:
        _fail(item, error)
