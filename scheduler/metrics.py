"""Gauges that need Redis reads, computed by the scheduler alone (never by every worker).

Every `EXPORT_S` the exporter reads the subscriptions and topics from the database and, in a
few pipelined round trips, each group's lag, pending count and oldest undelivered entry, the
dead-letter stream lengths, topic stream lengths, and the delay and retry set sizes; and, from
the database's catalog, the rows and bytes of the record tables. A scrape
answers from the last snapshot (a custom collector), so scrapes never touch Redis and gauges
of deleted subscriptions disappear with the next snapshot. The first export also starts the
exposition server on `PROMETHEUS_PORT` (see `mq/metrics.py`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from apscheduler.schedulers.base import BaseScheduler
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import select

from broker.connection import RedisClient
from broker.delivery import DEFAULT_POOL
from broker.heartbeats import live_processes
from broker.inspection import GroupTarget, inspect_groups
from broker.keys import Keys, group_name
from models import Database, Subscription, Tenant, Topic
from models.partitions import TableStorage, day_start, storage
from mq import metrics
from mq.settings import Settings

log = logging.getLogger(__name__)

EXPORT_S = 5.0
STORED_TABLES = ("message_records", "consumption_records", "idempotency_keys")
SUBSCRIPTION_LABELS = ["tenant_id", "topic", "subscription_id", "consumer_group"]


@dataclass
class Snapshot:
    subscriptions: list[tuple[list[str], dict[str, float]]] = field(default_factory=list)
    queues: list[tuple[str, str, int]] = field(default_factory=list)  # name, type, size
    storage: list[TableStorage] = field(default_factory=list)
    taken_at: float = 0.0


class GaugeExporter(Collector):
    """The scheduler's job (`export`) and the collector that serves its last snapshot."""

    def __init__(self, settings: Settings, redis: RedisClient, keys: Keys) -> None:
        self.settings = settings
        self.redis = redis
        self.keys = keys
        self.snapshot = Snapshot()
        self.lock = threading.Lock()
        self.serving = False
        self.database = Database(settings.database_url, pool_size=1)

    def schedule(self, scheduler: BaseScheduler) -> None:
        """Run `export` now and every `EXPORT_S`."""
        scheduler.add_job(self.export, "interval", seconds=EXPORT_S, id="export-gauges",
                          next_run_time=datetime.now(UTC))

    def export(self) -> None:
        if not self.serving and self.settings.metrics_enabled:
            metrics.register_collector(self)
            metrics.serve(self.settings.prometheus_port)
            self.serving = True
        snapshot = self.take()
        with self.lock:
            self.snapshot = snapshot

    def take(self, now: float | None = None) -> Snapshot:
        now = now if now is not None else time.time()
        rows = self._rows()
        targets = [GroupTarget(r.topic_id, r.partition_count,
                               group_name(r.tenant_id, r.consumer_group)) for r in rows]
        views = inspect_groups(self.redis, self.keys, targets)
        topics = self._topics()
        pipe = self.redis.pipeline(transaction=False)
        for row in rows:
            pipe.xlen(self.keys.dead_letters(row.id))
        for topic_id, partitions, _ in sorted(topics):
            for key in self.keys.streams(topic_id, partitions):
                pipe.xlen(key)
        pools = self._pools()
        for pool in pools:
            pipe.zcard(self.keys.retry_due(pool))
        pipe.zcard(self.keys.delayed())
        replies = iter(pipe.execute(raise_on_error=False))
        snapshot = Snapshot(taken_at=now)
        for row, target in zip(rows, targets, strict=True):
            view = views[(target.topic_id, target.group)]
            age = max(0.0, now - view.oldest_ms / 1000) if view.oldest_ms is not None else 0.0
            labels = [row.tenant_id, row.topic_name, row.id, row.consumer_group]
            dead_letters = _int(next(replies))
            snapshot.subscriptions.append((labels, {
                "lag": view.lag, "pending": view.pending, "oldest_age": age,
                "dead_letters": dead_letters}))
            snapshot.queues.append((f"{row.topic_label}:{row.id}", "dead_letter", dead_letters))
        for _topic_id, partitions, label in sorted(topics):
            length = sum(_int(next(replies)) for _ in range(partitions))
            snapshot.queues.append((label, "topic", length))
        for pool in pools:
            snapshot.queues.append((pool, "retry", _int(next(replies))))
        snapshot.queues.append(("delayed", "delayed", _int(next(replies))))
        with self.database.engine.connect() as connection:
            snapshot.storage = storage(connection, STORED_TABLES)
        return snapshot

    def _rows(self) -> list[_Row]:
        with self.database.session() as session:
            found = session.execute(
                select(Subscription.id, Subscription.tenant_id, Subscription.consumer_group,
                       Topic.id, Topic.partition_count, Topic.name, Tenant.name)
                .join(Topic, Topic.id == Subscription.topic_id)
                .join(Tenant, Tenant.id == Topic.tenant_id)).all()
        return [_Row(sid, tenant_id, group, topic_id, partitions, name, f"{owner}/{name}")
                for sid, tenant_id, group, topic_id, partitions, name, owner in found]

    def _topics(self) -> set[tuple[str, int, str]]:
        with self.database.session() as session:
            found = session.execute(
                select(Topic.id, Topic.partition_count, Topic.name, Tenant.name)
                .join(Tenant, Tenant.id == Topic.tenant_id)).all()
        return {(tid, partitions, f"{owner}/{name}") for tid, partitions, name, owner in found}

    def _pools(self) -> list[str]:
        pools = {DEFAULT_POOL}
        for process in live_processes(self.redis, self.keys):
            pools.update(process.get("pools") or ())
        return sorted(pools)

    # -- the collector ---------------------------------------------------------------------------
    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self.lock:
            snapshot = self.snapshot
        families = {
            "lag": GaugeMetricFamily("mq_subscription_lag", "Entries not yet read by the "
                                     "subscription's group", labels=SUBSCRIPTION_LABELS),
            "pending": GaugeMetricFamily("mq_subscription_pending", "Entries read but not yet "
                                         "acknowledged", labels=SUBSCRIPTION_LABELS),
            "oldest_age": GaugeMetricFamily(
                "mq_subscription_oldest_pending_age_seconds",
                "Age of the oldest entry not yet delivered (unread or unacknowledged)",
                labels=SUBSCRIPTION_LABELS),
            "dead_letters": GaugeMetricFamily("mq_dead_letter_size", "Dead letters of the "
                                              "subscription", labels=SUBSCRIPTION_LABELS),
        }
        for labels, values in snapshot.subscriptions:
            for name, family in families.items():
                family.add_metric(labels, values[name])
        yield from families.values()
        queues = GaugeMetricFamily("mq_queue_size", "Entries waiting in topic streams, "
                                   "dead-letter streams, retry and delay sets",
                                   labels=["queue_name", "type"])
        for name, kind, size in snapshot.queues:
            queues.add_metric([name, kind], size)
        yield queues
        yield from _storage_families(snapshot)
        yield GaugeMetricFamily("mq_gauges_exported_timestamp_seconds",
                                "When the gauges above were computed", value=snapshot.taken_at)


def _storage_families(snapshot: Snapshot) -> Iterator[GaugeMetricFamily]:
    rows = GaugeMetricFamily("mq_storage_rows", "Rows of a record table, all partitions (the "
                             "planner's estimate, refreshed hourly)", labels=["table"])
    size = GaugeMetricFamily("mq_storage_bytes", "Bytes of a record table with its indexes, "
                             "all partitions", labels=["table"])
    oldest = GaugeMetricFamily("mq_storage_oldest_partition_age_seconds", "Age of the start "
                               "of a partitioned table's oldest day", labels=["table"])
    for table in snapshot.storage:
        rows.add_metric([table.table], table.rows)
        size.add_metric([table.table], table.bytes)
        if table.oldest_day is not None:
            oldest.add_metric([table.table], max(
                0.0, snapshot.taken_at - day_start(table.oldest_day).timestamp()))
    yield from (rows, size, oldest)


@dataclass(frozen=True)
class _Row:
    id: str
    tenant_id: str
    consumer_group: str
    topic_id: str
    partition_count: int
    topic_name: str
    #: `<owner tenant name>/<topic name>`: unique across tenants (queue names of `mq_queue_size`).
    topic_label: str


def _int(reply: object) -> int:
    return reply if isinstance(reply, int) else 0
