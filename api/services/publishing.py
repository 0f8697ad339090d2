"""Publishing from a request: access, quotas, schema checks and metrics around the
publishing core.

The core (`publishing`) prepares each message and this process's group writer stores and
appends it together with the publishes of every other request thread (see `publishing.group`
for the order of the writes and why a `2xx` is safe). Here: which topic, who may publish,
the tenant's quotas, the payload's schema, and counting what was published.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import Any

from api.dependencies import Principal, Scope
from api.services.formats import keyring, publish_codec
from api.services.lookups import find_topic
from api.services.quotas import check_stored_bytes, take_publish_rate
from api.services.registry import validate_payload
from formats.encryption import Keyring
from mq import metrics
from mq.errors import Forbidden, TopicNotActive, ValidationError
from mq.tracing import TraceContext, with_trace
from publishing.jobs import Job, Published
from publishing.messages import (
    Prepared,
    PublishTarget,
    check_batch_size,
    prepare_message,
    scheduled,
)


def publish_target(here: Scope, tenant_id: str, name: str) -> PublishTarget:
    """The tenant's topic `name`, from the process cache when it is current."""

    def load() -> PublishTarget:
        topic = find_topic(here.session, tenant_id, name)
        return PublishTarget.of(topic, publish_codec(here.session, topic))

    return here.services.cache.get_or_load("topic", f"{tenant_id}/{name}", here.cache_epoch(),
                                           load)


def admit(here: Scope, caller: Principal, name: str, messages: int) -> PublishTarget:
    """The caller's topic `name`, once the tenant's publish rate and stored bytes quotas
    admit `messages` more."""
    topic = publish_target(here, caller.tenant_id, name)
    take_publish_rate(here, topic.tenant_id, messages)
    check_stored_bytes(here, topic.tenant_id)
    return topic


def require_payload(message: dict[str, Any]) -> None:
    """Bodies that may carry either one message or something else (`messages`, `cron`)
    need `payload` when they carry one message."""
    if "payload" not in message:
        raise ValidationError("payload is required",
                              {"payload": ["Missing data for required field."]})


def check_producer(topic: PublishTarget, caller: Principal) -> None:
    """Archived topics take nothing; producer keys must be on a non-empty allow-list."""
    if topic.status == "archived":
        raise TopicNotActive(topic.name, topic.status)
    if caller.is_admin or not topic.allowed_producers:
        return
    if caller.key_name not in topic.allowed_producers:
        raise Forbidden(f"key '{caller.key_name}' may not publish to topic '{topic.name}'")


def prepare(here: Scope, topic: PublishTarget, caller: Principal, message: dict[str, Any],
            index: int | None = None) -> Prepared:
    """Schema-check and prepare one message of `caller` for `topic`."""
    return _prepare(here, topic, caller, message, index, _keyring(here, topic))


def _prepare(here: Scope, topic: PublishTarget, caller: Principal, message: dict[str, Any],
             index: int | None, keys: Keyring | None) -> Prepared:
    validate_payload(here, topic, message.get("payload"), index)
    return prepare_message(topic, caller.key_name, message, index, keyring=keys)


def _keyring(here: Scope, topic: PublishTarget) -> Keyring | None:
    return None if topic.codec.plain else keyring(here.services.settings)


def publish(here: Scope, topic: PublishTarget, caller: Principal,
            messages: Sequence[dict[str, Any]], *, batch: bool) -> list[Published]:
    """Publish `messages` to `topic`, in order, all or none; each carries the request's
    trace context unless it has its own (`mq.tracing.with_trace`)."""
    check_producer(topic, caller)
    with _producer_span(here, topic, len(messages)) as trace:
        keys = _keyring(here, topic)
        items = [_prepare(here, topic, caller, with_trace(m, trace), i if batch else None, keys)
                 for i, m in enumerate(messages)]
        if batch:
            check_batch_size(items)
        answers = _write(here, topic, items)
        if here.services.tracing.on and len(answers) == 1:
            here.services.tracing.annotate(messaging__message__id=answers[0].message_id)
        return answers


def publish_at(here: Scope, topic: PublishTarget, caller: Principal, message: dict[str, Any],
               deliver_at: datetime) -> Published:
    """Record `message` as scheduled for `deliver_at` and park it in the delay set; the
    scheduler releases it into its stream when it is due."""
    check_producer(topic, caller)
    with _producer_span(here, topic, 1) as trace:
        item = scheduled(prepare(here, topic, caller, with_trace(message, trace)), deliver_at,
                         message.get("ttl_ms"))
        [answer] = _write(here, topic, [item])
        return answer


def _producer_span(here: Scope, topic: PublishTarget, count: int
                   ) -> AbstractContextManager[TraceContext | None]:
    """The publish's `send` span, a child of the request's trace context; the block gets the
    context its messages carry (the request's own when tracing is off)."""
    tracing = here.services.tracing
    if not tracing.on:
        return nullcontext(here.trace)
    return tracing.producer(topic.name, here.trace,
                            messaging__batch__message_count=count if count > 1 else None)


def _write(here: Scope, topic: PublishTarget, items: list[Prepared]) -> list[Published]:
    # The epoch this request's look-ups trusted, for the writer to check (see `api.cache`).
    answers = here.services.writer.publish(Job(topic.name, items, epoch=here.epoch_to_check()))
    stored = [item.row["payload_size"] for item, answer in zip(items, answers, strict=True)
              if not answer.duplicate and item.due_ms is None]
    _record_published(topic, stored, here.started)
    return answers


def _record_published(topic: PublishTarget, sizes: Sequence[int], started: float | None) -> None:
    """Count newly stored messages in Prometheus (the topic's rate ring is counted by the
    group writer, in the same round trip as the append)."""
    if not sizes:
        return
    metrics.child(metrics.MESSAGES, topic.name, "publish", "published", topic.tenant_id).inc(
        len(sizes))
    if started is not None:
        metrics.child(metrics.PUBLISH_LATENCY, topic.name, topic.tenant_id).observe(
            time.perf_counter() - started)
