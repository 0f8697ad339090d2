"""The delivery actor and the middleware around it.

`DeliveryMiddleware.before_process_message` decides whether a delivery may start at all: a
deleted subscription's messages are dropped (acked), a paused one's are handed back (they wait,
nothing is lost), expired ones are dropped or dead-lettered as `expired`. The actor then runs
the subscription's handler (looked up by `handler_config.type`) and turns its outcome into
dramatiq's terms: success returns; a retryable failure raises `DeliveryRetry` (a `Retry` with
the subscription's backoff, so the stock `Retries` middleware parks it and counts it against
`max_retries`); a permanent failure raises `PermanentDeliveryError`, listed in the actor's
`throws`, so `Retries` fails it at once and the broker's `nack` dead-letters it.
After the ack or nack, one consumption record per attempt goes to the batch writer.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from datetime import UTC, datetime
from typing import Any

import dramatiq
from dramatiq import Middleware
from dramatiq.errors import Retry
from dramatiq.middleware import SkipMessage

from broker.delivery import ACTOR_NAME, DEFAULT_POOL, Route
from broker.envelope import FIELD, Envelope
from broker.outcomes import DeliveryOutcome
from broker.proxy import StreamProxy
from broker.redis_streams import RedisStreamsBroker
from formats.codec import DecodingError
from formats.encryption import DecryptError
from handlers import pipeline
from handlers.base import Delivery, HandlerFailure, PermanentFailure
from handlers.pipeline import Filtered
from handlers.registry import HandlerRegistry
from mq.tracing import TraceContext, Tracing, messaging_attributes
from workers.payloads import PayloadDecoder
from workers.records import RecordWriter

log = logging.getLogger(__name__)

#: Jitter only adds, and at most 10 % (docs/api.md): every wait is at least the nominal backoff.
JITTER = 0.10


class DeliveryRetry(Retry):
    """A failed attempt that will be retried after `delay` ms."""


class PermanentDeliveryError(Exception):
    """A failed attempt that must not be retried; `reason` is the dead-letter reason."""

    def __init__(self, message: str, reason: str = "permanent") -> None:
        super().__init__(message)
        self.reason = reason


def backoff_ms(route: Route, failed_attempt: int) -> int:
    """The wait before attempt `failed_attempt + 1`: min(delay * 2^(n-1), max) + jitter."""
    nominal = min(route.retry_delay_ms * 2 ** min(failed_attempt - 1, 40), route.max_retry_delay_ms)
    return int(nominal * (1 + random.uniform(0, JITTER)))


class _Current(threading.local):
    proxy: StreamProxy | None = None


class DeliveryMiddleware(Middleware):
    """Gates deliveries on the subscription's current state and records every attempt."""

    def __init__(self, broker: RedisStreamsBroker, records: RecordWriter,
                 handlers: HandlerRegistry, payloads: PayloadDecoder,
                 tracing: Tracing | None = None) -> None:
        self.payloads = payloads
        self.tracing = tracing or Tracing()
        self.broker = broker
        self.records = records
        self.handlers = handlers
        self.current = _Current()

    def before_process_message(self, broker: dramatiq.Broker, message: Any) -> None:
        proxy = StreamProxy.of(message)
        route = self.broker.route(proxy.subscription_id)
        if route is None:
            proxy.outcome = DeliveryOutcome.DROPPED
            raise SkipMessage("subscription deleted")
        if not route.active:
            proxy.outcome = DeliveryOutcome.HANDED_BACK
            raise SkipMessage("subscription or topic paused")
        # The subscription's current policy: also for retries parked under an older one. The
        # backoff bounds serve failures that do not come as a `DeliveryRetry` (which carries
        # the contract's exact delay, as the stock backoff's jitter may double a wait).
        proxy.options.update(max_retries=route.max_retry_attempts,
                             min_backoff=route.retry_delay_ms,
                             max_backoff=max(route.retry_delay_ms, route.max_retry_delay_ms))
        self.current.proxy = proxy

    def after_process_message(self, broker: dramatiq.Broker, message: Any, *,
                              result: Any = None, exception: BaseException | None = None) -> None:
        self.current.proxy = None

    def after_skip_message(self, broker: dramatiq.Broker, message: Any) -> None:
        self.current.proxy = None

    def after_ack(self, broker: dramatiq.Broker, message: Any) -> None:
        proxy = StreamProxy.of(message)
        if proxy.outcome is not None and proxy.outcome.recorded:
            self._record(proxy, proxy.outcome)

    def after_nack(self, broker: dramatiq.Broker, message: Any) -> None:
        proxy = StreamProxy.of(message)
        letter = proxy.dead_letter
        if letter is None:
            return
        self._record(proxy, DeliveryOutcome.DEAD_LETTERED)
        envelope, route = letter.envelope, letter.route
        self.records.message(
            tenant_id=route.tenant_id, topic_id=letter.topic_id, message_id=envelope.message_id,
            message_key=envelope.key, headers=envelope.headers, payload=envelope.payload,
            payload_size=len(envelope.encode()[FIELD]), content_type=envelope.content_type,
            partition_id=0, offset_value=letter.offset, status="published", retry_count=0,
            producer_id=f"dead-letter:{route.subscription_id}",
            published_at=datetime.fromtimestamp(envelope.published_ms / 1000, UTC))

    def _record(self, proxy: StreamProxy, outcome: DeliveryOutcome) -> None:
        route = self.broker.route(proxy.subscription_id)
        info = proxy.attempt_info
        if route is None and not info:
            return
        _, partition, offset, _ = proxy.args
        self.records.consumption(
            tenant_id=route.tenant_id if route else info["tenant_id"],
            subscription_id=proxy.subscription_id,
            message_id=info.get("message_id") or _message_id(proxy),
            consumer_instance=self.broker.instance,
            partition_id=partition,
            offset_value=offset,
            status=outcome.value,
            processing_time_ms=info.get("processing_time_ms"),
            error_message=(_storable(proxy.error_message)
                           if outcome is not DeliveryOutcome.DELIVERED else None),
            retry_count=int(info.get("attempt", 1)) - 1,
            response_status=info.get("response_status"),
            response_excerpt=_storable(info.get("response_excerpt")),
            consumed_at=info.get("started_at") or datetime.now(UTC),
            processed_at=datetime.now(UTC),
        )


def _storable(text: str | None) -> str | None:
    """Text PostgreSQL can store (a response body may hold NUL characters)."""
    return text.replace("\x00", "\ufffd") if text else text


def _message_id(proxy: StreamProxy) -> str:
    return Envelope.decode({FIELD: proxy.args[3]}).message_id


class DeliveryActor:
    """The callable behind the `deliver` actor."""

    def __init__(self, broker: RedisStreamsBroker, middleware: DeliveryMiddleware) -> None:
        self.broker = broker
        self.middleware = middleware

    def __call__(self, subscription_id: str, partition: int, offset: str, raw: str) -> None:
        proxy = self.middleware.current.proxy
        route = self.broker.route(subscription_id)
        if proxy is None or route is None:
            return
        envelope = Envelope.decode({FIELD: raw})
        attempt = int(proxy.options.get("retries", 0)) + 1
        proxy.attempt_info = {"attempt": attempt, "message_id": envelope.message_id,
                              "tenant_id": route.tenant_id, "started_at": datetime.now(UTC)}
        if envelope.expires_ms is not None and envelope.expires_ms < time.time() * 1000:
            self._expired(proxy, route)
            return
        try:
            payload, headers = self.middleware.payloads.decoded(route, envelope)
        except (DecryptError, DecodingError) as exc:
            reason = "decrypt" if isinstance(exc, DecryptError) else "permanent"
            self._failed(proxy, route, attempt, time.perf_counter(),
                         PermanentFailure(f"cannot decode the message: {exc}", reason=reason))
        delivery = Delivery(
            subscription_id=subscription_id, message_id=envelope.message_id,
            topic=route.topic_name, partition=partition, offset=offset,
            payload=payload, published_ms=envelope.published_ms, attempt=attempt,
            key=envelope.key, headers=headers,
            correlation_id=envelope.correlation_id, trace_id=envelope.trace_id)
        tracing = self.middleware.tracing
        if not tracing.on:
            self._attempt(proxy, route, delivery)
            return
        with tracing.span(f"process {route.topic_name}", "CONSUMER",
                          parent=TraceContext.of_headers(headers),
                          attributes=_span_attributes(route, delivery)):
            self._attempt(proxy, route, delivery)
            if proxy.outcome is DeliveryOutcome.FILTERED:
                tracing.annotate(mq__filtered=True)

    def _attempt(self, proxy: StreamProxy, route: Route, delivery: Delivery) -> None:
        """Run the subscription's pipeline and handler; the outcome goes on the proxy."""
        started = time.perf_counter()
        try:
            prepared = pipeline.apply(route.handler_config, route.message_filter, delivery)
            if isinstance(prepared, Filtered):
                proxy.outcome = DeliveryOutcome.FILTERED
                return
            handler = self.middleware.handlers.get(str(route.handler_config.get("type", "")))
            result = handler.deliver(route.handler_config, prepared)
        except HandlerFailure as failure:
            self._failed(proxy, route, delivery.attempt, started, failure)
        except Exception as exc:  # a handler bug counts as a retryable failure
            self._failed(proxy, route, delivery.attempt, started,
                         HandlerFailure(f"{type(exc).__name__}: {exc}"))
        else:
            proxy.outcome = DeliveryOutcome.DELIVERED
            proxy.attempt_info.update(processing_time_ms=_ms_since(started),
                                      response_status=result.status,
                                      response_excerpt=result.excerpt)

    def _failed(self, proxy: StreamProxy, route: Route, attempt: int, started: float,
                failure: HandlerFailure) -> None:
        proxy.outcome = DeliveryOutcome.FAILED
        proxy.error_message = str(failure)
        proxy.attempt_info.update(processing_time_ms=_ms_since(started),
                                  response_status=failure.status,
                                  response_excerpt=failure.excerpt)
        if isinstance(failure, PermanentFailure):
            raise PermanentDeliveryError(str(failure), failure.reason)
        raise DeliveryRetry(str(failure), delay=backoff_ms(route, attempt))

    @staticmethod
    def _expired(proxy: StreamProxy, route: Route) -> None:
        if route.dead_letter_expired:
            proxy.outcome = DeliveryOutcome.FAILED
            proxy.error_message = "the message expired before it could be delivered"
            raise PermanentDeliveryError(proxy.error_message, "expired")
        proxy.outcome = DeliveryOutcome.EXPIRED


def _span_attributes(route: Route, delivery: Delivery) -> dict[str, Any]:
    return messaging_attributes(
        "process", route.topic_name, messaging__message__id=delivery.message_id,
        messaging__destination__partition__id=str(delivery.partition),
        messaging__destination__subscription__name=route.subscription_id,
        messaging__consumer__group__name=route.consumer_name,
        mq__delivery__attempt=delivery.attempt)


def _ms_since(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)


def declare_actor(broker: RedisStreamsBroker, middleware: DeliveryMiddleware) -> dramatiq.Actor:
    """The one delivery actor; its queue is the default pool (other pools are declared)."""
    declare = dramatiq.actor(actor_name=ACTOR_NAME, queue_name=DEFAULT_POOL, broker=broker,
                             throws=(PermanentDeliveryError,), max_retries=3)
    return declare(DeliveryActor(broker, middleware))
