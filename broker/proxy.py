"""A delivery in flight: the dramatiq message, where it came from, and how it went."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from dramatiq import Message, MessageProxy

from broker.dead_letters import DeadLetter
from broker.outcomes import DeliveryOutcome


@dataclass(frozen=True)
class Handle:
    """Where a delivery came from: acking, renewing and handing back use it."""

    stream: str
    group: str
    entry_id: str
    consumer: str
    direct: bool  # from the pool's direct stream (one group: ack also deletes the entry)


class StreamProxy(MessageProxy):
    """A message with its delivery handle (kept off `options`, which travel with retries),
    and what the worker learnt while processing it."""

    def __init__(self, message: Message[Any], handle: Handle, subscription_id: str) -> None:
        super().__init__(message)
        self.handle = handle
        self.subscription_id = subscription_id
        self.outcome: DeliveryOutcome | None = None
        self.error_message: str | None = None
        self.failure_reason: str | None = None
        self.attempt_info: dict[str, Any] = {}
        #: Set by the consumer's `nack` when the delivery was dead-lettered.
        self.dead_letter: DeadLetter | None = None

    @staticmethod
    def of(message: MessageProxy) -> StreamProxy:
        """A message our consumer handed out (dramatiq types it as a plain proxy)."""
        return cast(StreamProxy, message)

    @property
    def message(self) -> Message[Any]:
        """The dramatiq message itself (without this delivery's state)."""
        return self._message

    def failure_text(self) -> str:
        """Why the message failed, for a dead letter of a message that is no subscription
        delivery."""
        if self.error_message:
            return self.error_message
        exc = self._exception
        if exc is not None:
            return f"{type(exc).__name__}: {exc}"
        return self.failure_reason or "failed"
