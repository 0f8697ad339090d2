"""Worker metrics: Prometheus counters and histograms, recent rates for the metrics API, and
one structured log line per failed or dead-lettered delivery (per delivery at DEBUG).

A dramatiq middleware that only looks at what the delivery middleware left on the message
(`outcome`, `attempt_info`) after the ack or nack. Latency is publish accepted -> handler
finished: the stream entry id's timestamp (set by Redis when the API appended the message, or
when the scheduler released a delayed one) to the moment the ack is queued. Redis-side tallies
are flushed by a background thread about once a second, never per delivery.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import dramatiq
from dramatiq import Middleware
from redis.exceptions import RedisError

from broker.delivery import Route, entry_ms
from broker.envelope import FIELD, Envelope
from broker.outcomes import DeliveryOutcome
from broker.proxy import StreamProxy
from broker.rates import LATENCY_SAMPLES, Rates, Tally
from broker.redis_streams import RedisStreamsBroker
from mq import metrics
from mq.logging import RepeatedFailures
from mq.settings import Settings

log = logging.getLogger("workers.deliveries")

FLUSH_S = 1.0
#: Outcomes of an attempt that ran the handler (timed, and counted in the recent rates).
ATTEMPTED = (DeliveryOutcome.DELIVERED, DeliveryOutcome.FAILED)


@dataclass(frozen=True)
class _Series:
    messages: Any
    duration: Any
    latency: Any
    retries: Any


class WorkerMetrics(Middleware):
    """See the module docstring."""

    def __init__(self, broker: RedisStreamsBroker, settings: Settings) -> None:
        self.broker = broker
        self.settings = settings
        self.rates = Rates(broker.client, broker.keys)
        self.lock = threading.Lock()
        self.tallies: dict[str, Tally] = {}
        self.stop = threading.Event()
        self.flusher: threading.Thread | None = None
        self.port: int | None = None
        self.series: dict[tuple[str, str, str, str], _Series] = {}
        self.failures = RepeatedFailures(log, outages=(RedisError,))

    # -- lifecycle -----------------------------------------------------------------------------
    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        if self.settings.metrics_enabled:
            self.port = metrics.serve(self.settings.prometheus_port)
        self.flusher = threading.Thread(target=self._flush_loop, name="metrics-flush",
                                        daemon=True)
        self.flusher.start()

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: Any) -> None:
        self.stop.set()
        if self.flusher is not None:
            self.flusher.join(5)
        self.flush()

    # -- outcomes ------------------------------------------------------------------------------
    def after_ack(self, broker: dramatiq.Broker, message: Any) -> None:
        proxy = StreamProxy.of(message)
        if proxy.outcome is not None:
            self._count(proxy, proxy.outcome)

    def after_nack(self, broker: dramatiq.Broker, message: Any) -> None:
        proxy = StreamProxy.of(message)
        if proxy.dead_letter is None:
            return
        if proxy.outcome is DeliveryOutcome.FAILED:  # the last attempt failed, then it was
            self._count(proxy, DeliveryOutcome.FAILED, log_it=False)  # dead-lettered
        self._count(proxy, DeliveryOutcome.DEAD_LETTERED)

    def _count(self, proxy: StreamProxy, outcome: DeliveryOutcome, *,
               log_it: bool = True) -> None:
        route = self.broker.route(proxy.subscription_id)
        if route is None or outcome.metric_status is None:
            return
        series = self._series(route, outcome.metric_status)
        series.messages.inc()
        info = proxy.attempt_info
        now = time.time()
        if outcome in ATTEMPTED:
            if info.get("processing_time_ms") is not None:
                series.duration.observe(info["processing_time_ms"] / 1000)
            if int(info.get("attempt", 1)) > 1:
                series.retries.inc()
        latency_ms = None
        if outcome is DeliveryOutcome.DELIVERED:
            latency_ms = max(0.0, now * 1000 - entry_ms(proxy.args[2]))
            series.latency.observe(latency_ms / 1000)
        if outcome in ATTEMPTED:
            self._tally(proxy.subscription_id, now, ok=outcome is DeliveryOutcome.DELIVERED,
                        latency_ms=latency_ms)
        failed = outcome in (DeliveryOutcome.FAILED, DeliveryOutcome.DEAD_LETTERED)
        if log_it and (failed or log.isEnabledFor(logging.DEBUG)):
            self._log(proxy, route.topic_name, outcome)

    def _series(self, route: Route, status: str) -> _Series:
        """The labelled children of one subscription and status, looked up once: a label
        lookup costs as much as the observation itself."""
        handler_type = str(route.handler_config.get("type", "unknown"))
        key = (route.topic_name, handler_type, status, route.tenant_id)
        series = self.series.get(key)
        if series is None:
            series = self.series[key] = _Series(
                messages=metrics.MESSAGES.labels(*key),
                duration=metrics.HANDLER_DURATION.labels(route.topic_name, handler_type),
                latency=metrics.MESSAGE_LATENCY.labels(route.topic_name, handler_type),
                retries=metrics.RETRIED_ATTEMPTS.labels(route.topic_name, handler_type))
        return series

    def _tally(self, subscription_id: str, now: float, *, ok: bool,
               latency_ms: float | None) -> None:
        with self.lock:
            tally = self.tallies.setdefault(subscription_id, Tally())
            tally.add(int(now), ok=int(ok), failed=int(not ok))
            if latency_ms is not None:
                tally.latencies.append(f"{int(now * 1000)}:{latency_ms:.1f}")

    def _log(self, proxy: StreamProxy, topic: str, outcome: DeliveryOutcome) -> None:
        envelope = Envelope.decode({FIELD: proxy.args[3]})
        context = {"message_id": envelope.message_id, "topic": topic,
                   "subscription_id": proxy.subscription_id,
                   "attempt": proxy.attempt_info.get("attempt"), "trace_id": envelope.trace_id}
        if outcome is DeliveryOutcome.DEAD_LETTERED:
            reason = proxy.dead_letter.entry.failure_reason if proxy.dead_letter else None
            log.warning("delivery dead-lettered (%s): %s", reason, proxy.error_message,
                        extra=context)
        elif outcome is DeliveryOutcome.FAILED:
            log.warning("delivery failed, will retry: %s", proxy.error_message, extra=context)
        else:  # at DEBUG only: one line per delivery is too much for a busy worker at INFO
            log.debug("delivery %s", outcome.metric_status, extra=context)

    # -- flushing ------------------------------------------------------------------------------
    def _flush_loop(self) -> None:
        while not self.stop.wait(FLUSH_S):
            self.failures.run("delivery rates flush", self.flush)

    def flush(self) -> None:
        with self.lock:
            tallies, self.tallies = self.tallies, {}
        try:
            self.rates.record_deliveries(tallies)
        except Exception:
            with self.lock:  # kept for the next flush
                for sid, tally in tallies.items():
                    self._merge(sid, tally)
            raise

    def _merge(self, subscription_id: str, tally: Tally) -> None:
        current = self.tallies.setdefault(subscription_id, Tally())
        for second, (ok, failed) in tally.per_second.items():
            current.add(second, ok=ok, failed=failed)
        current.latencies[:0] = tally.latencies
        del current.latencies[:-LATENCY_SAMPLES]
