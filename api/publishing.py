"""Publishing from a request: access, schema checks and metrics around the publishing core.

The core (`publishing`) prepares each message and this process's group writer stores and
appends it together with the publishes of every other request thread (see `publishing.group`
for the order of the writes and why a `2xx` is safe). Here: who may publish, the payload's
schema, and counting what was published.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from flask import g

from api.auth import Principal
from api.metrics import record_published
from api.schemas import validate_payload
from api.services import services
from formats.encryption import Keyring, cached_keyring
from mq.errors import Forbidden, TopicNotActive
from publishing.jobs import Job, Published
from publishing.messages import (
    Prepared,
    PublishTarget,
    check_batch_size,
    prepare_message,
    scheduled,
)


def check_producer(topic: PublishTarget, caller: Principal) -> None:
    """Archived topics take nothing; producer keys must be on a non-empty allow-list."""
    if topic.status == "archived":
        raise TopicNotActive(topic.name, topic.status)
    if caller.is_admin or not topic.allowed_producers:
        return
    if caller.key_name not in topic.allowed_producers:
        raise Forbidden(f"key '{caller.key_name}' may not publish to topic '{topic.name}'")


def prepare(topic: PublishTarget, caller: Principal, message: dict[str, Any],
            index: int | None = None) -> Prepared:
    """Schema-check and prepare one message of `caller` for `topic`."""
    return _prepare(topic, caller, message, index, _keyring(topic))


def _prepare(topic: PublishTarget, caller: Principal, message: dict[str, Any],
             index: int | None, keyring: Keyring | None) -> Prepared:
    validate_payload(topic, message.get("payload"), index)
    return prepare_message(topic, caller.key_name, message, index, keyring=keyring)


def _keyring(topic: PublishTarget) -> Keyring | None:
    if topic.codec.plain:
        return None
    settings = services().settings
    return cached_keyring(settings.mq_master_key, settings.mq_old_master_keys)


def publish(topic: PublishTarget, caller: Principal, messages: Sequence[dict[str, Any]], *,
            batch: bool) -> list[Published]:
    """Publish `messages` to `topic`, in order, all or none."""
    check_producer(topic, caller)
    keyring = _keyring(topic)
    items = [_prepare(topic, caller, m, i if batch else None, keyring)
             for i, m in enumerate(messages)]
    if batch:
        check_batch_size(items)
    return _write(topic, items)


def publish_at(topic: PublishTarget, caller: Principal, message: dict[str, Any],
               deliver_at: datetime) -> Published:
    """Record `message` as scheduled for `deliver_at` and park it in the delay set; the
    scheduler releases it into its stream when it is due."""
    check_producer(topic, caller)
    item = scheduled(prepare(topic, caller, message), deliver_at, message.get("ttl_ms"))
    [answer] = _write(topic, [item])
    return answer


def _write(topic: PublishTarget, items: list[Prepared]) -> list[Published]:
    # The epoch this request's look-ups trusted, for the writer to check (see `api.cache`).
    epoch = g.get("cache_epoch") if g.get("epoch_checked_later") else None
    answers = services().writer.publish(Job(topic.name, items, epoch=epoch))
    stored = [item.row["payload_size"] for item, answer in zip(items, answers, strict=True)
              if not answer.duplicate and item.due_ms is None]
    record_published(topic.name, topic.tenant_id, stored)
    return answers
