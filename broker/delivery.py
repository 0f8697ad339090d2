"""What the broker needs to know about a subscription, and the dramatiq message of a delivery.

A `Route` is a subscription as the worker fleet sees it: which streams and consumer group it
reads, whether it may deliver now, its retry policy, its handler and its dead-letter topic.
Workers build routes from the database (and rebuild them on control events); the broker and its
consumer only ever read them, so they never touch the database themselves.

Every delivery is a dramatiq message for the single generic actor `ACTOR_NAME` on a pool
queue. Its arguments are `(subscription_id, partition, offset, envelope)`: everything needed to
deliver it again after a retry or a redrive travels with the message, and the per-subscription
policy (handler, retries) is looked up in the current route when it runs, so changes apply to
messages already waiting.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from dramatiq import Message

from broker.keys import Keys

#: The pool every subscription uses in this edition (`mq worker --pools` selects pools).
DEFAULT_POOL = "default"
#: Approximate length cap of a pool's direct stream (`Keys.pool_stream`).
POOL_STREAM_CAP = 10_000_000
#: The one actor that delivers a message to a subscription's handler.
ACTOR_NAME = "deliver"
#: The Redis consumer that handed-back entries are parked on: idle "forever", so the next
#: reclaim pass of any worker picks them up at once.
ABANDONED_CONSUMER = "abandoned"


@dataclass(frozen=True)
class Route:
    subscription_id: str
    tenant_id: str
    topic_id: str
    topic_name: str
    partition_count: int
    group: str
    consumer_name: str
    active: bool
    session_timeout_ms: int = 30_000
    max_retry_attempts: int = 3
    retry_delay_ms: int = 1_000
    max_retry_delay_ms: int = 300_000
    handler_config: dict[str, Any] = field(default_factory=dict)
    message_filter: dict[str, Any] | None = None
    dead_letter_topic: str = ""
    dead_letter_expired: bool = False
    pool: str = DEFAULT_POOL
    avro_schema: Any = None  # the topic's Avro schema, to decode `avro` payloads
    #: The topic owner's tenant, whose key encrypted its messages (a public topic's
    #: subscription may belong to another tenant).
    topic_tenant_id: str = ""

    def streams(self, keys: Keys) -> list[str]:
        return keys.streams(self.topic_id, self.partition_count)

    def consumer(self, instance: str) -> str:
        """This subscription's Redis consumer in one worker instance."""
        return f"{self.consumer_name}@{instance}"


class RouteTable:
    """The routes a worker process serves, by subscription id: replaced as a whole by the
    worker (`replace`), read by the broker, its consumers and the middleware. `version`
    grows with every replacement, so a consumer rebuilds what it watches only on a change."""

    def __init__(self) -> None:
        self._routes: dict[str, Route] = {}
        self._lock = threading.Lock()
        self.version = 0

    def replace(self, routes: dict[str, Route]) -> None:
        with self._lock:
            self._routes = dict(routes)
            self.version += 1

    def get(self, subscription_id: str) -> Route | None:
        return self._routes.get(subscription_id)

    def all(self) -> dict[str, Route]:
        """The current routes (a mapping never changed in place: replacements swap it)."""
        return self._routes

    def __len__(self) -> int:
        return len(self._routes)


def entry_ms(entry_id: str) -> int:
    """The millisecond timestamp of a stream entry id."""
    return int(entry_id.split("-", 1)[0])


def delivery_message(
    pool: str,
    subscription_id: str,
    partition: int,
    offset: str,
    envelope: str,
    *,
    options: dict[str, Any] | None = None,
) -> Message[Any]:
    """The dramatiq message that delivers one stream entry to one subscription."""
    return Message(
        queue_name=pool,
        actor_name=ACTOR_NAME,
        args=(subscription_id, partition, offset, envelope),
        kwargs={},
        options=dict(options or {}),
        message_id=f"{subscription_id}:{partition}:{offset}",
        message_timestamp=entry_ms(offset) if "-" in offset else 0,
    )


def is_delivery(message: Message[Any]) -> bool:
    """Whether `message` delivers a stream entry to a subscription (`delivery_message`), as
    opposed to a message of any other dramatiq actor on the same broker."""
    return message.actor_name == ACTOR_NAME and len(message.args) == 4
