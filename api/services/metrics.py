"""The tenant's metrics (`/metrics`, `/metrics/topics`, `/metrics/consumers`).

Figures come from Redis: stream lengths and group lag/pending from `XINFO`, recent rates from
the per-second rings of `broker/rates.py` (publishes counted by the group writer, deliveries
by the workers), latencies from the workers' samples (publish accepted -> handler finished).
Rates are per second over the last 60 s; latencies in ms over the most recent deliveries
(`null` without any). `throughput` in the overview is finished delivery attempts per second
(successes and failures); `processing_rate` counts successes, `error_rate` failures. A
subscription's `active_consumers` counts its consumers that belong to live worker processes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from api.dependencies import Services
from broker.heartbeats import live_processes
from broker.inspection import GroupTarget, GroupView, inspect_groups, live_consumers
from broker.keys import group_name
from broker.rates import Rates, Window, average, percentile
from models import Subscription, Tenant, Topic


def overview(session: Session, svc: Services, tenant_id: str) -> dict[str, Any]:
    """The tenant's streams, consumers and delivery performance at a glance."""
    topics = topic_items(session, svc, own_topics(session, tenant_id))
    consumers = consumer_items(svc, own_subscriptions(session, tenant_id))
    samples = [s for c in consumers for s in c["_latencies"]]
    processing = round(sum(c["processing_rate"] for c in consumers), 3)
    errors = round(sum(c["error_rate"] for c in consumers), 3)
    return {
        "redis_streams": {
            "total_streams": sum(t["_partitions"] for t in topics),
            "total_consumer_groups": sum(t["_groups"] for t in topics),
            "total_messages": sum(t["length"] for t in topics),
            "pending_messages": sum(t["_pending"] for t in topics),
        },
        "consumers": {
            "active_consumers": sum(c["active_consumers"] for c in consumers),
            "total_lag": sum(c["lag"] for c in consumers),
            "processing_rate": processing,
            "error_rate": errors,
        },
        "performance": {
            "average_latency_ms": average(samples),
            "p95_latency_ms": percentile(samples, 0.95),
            "p99_latency_ms": percentile(samples, 0.99),
            "throughput": round(processing + errors, 3),
        },
        "kafka_topics": None,
    }


def own_topics(session: Session, tenant_id: str) -> list[Topic]:
    return list(session.scalars(select(Topic).where(Topic.tenant_id == tenant_id)
                                .order_by(Topic.name)))


def own_subscriptions(session: Session, tenant_id: str) -> list[tuple[Subscription, Topic, str]]:
    """The tenant's subscriptions with their topics, each topic as the tenant names it."""
    rows = session.execute(
        select(Subscription, Topic, Tenant.name)
        .join(Topic, Topic.id == Subscription.topic_id)
        .join(Tenant, Tenant.id == Topic.tenant_id)
        .where(Subscription.tenant_id == tenant_id)
        .order_by(Subscription.created_at, Subscription.id)).all()
    return [(sub, topic, topic.name if topic.tenant_id == tenant_id else f"{owner}/{topic.name}")
            for sub, topic, owner in rows]


def topic_items(session: Session, svc: Services,
                topics: Sequence[Topic]) -> list[dict[str, Any]]:
    """Per topic: stored length, publishes in total and per second, subscriptions, lag (and,
    prefixed `_`, what the overview sums)."""
    counts = dict(session.execute(
        select(Subscription.topic_id, func.count()).where(
            Subscription.topic_id.in_([t.id for t in topics])).group_by(Subscription.topic_id)
    ).all()) if topics else {}
    windows = _rates(svc).windows([t.id for t in topics])
    stats = svc.streams.partition_stats_of([(t.id, t.partition_count) for t in topics])
    items = []
    for topic, partitions in zip(topics, stats, strict=True):
        groups = [g for p in partitions for g in p.groups]
        window = windows.get(topic.id, Window())
        items.append({
            "name": topic.name,
            "length": sum(p.length for p in partitions),
            "published_total": sum(p.entries_added for p in partitions),
            "publish_rate": window.a_rate,
            "bytes_rate": window.b_rate,
            "subscriptions": counts.get(topic.id, 0),
            "lag": sum(g.lag for g in groups),
            "_partitions": topic.partition_count,
            "_groups": len({g.name for g in groups}),
            "_pending": sum(g.pending for g in groups),
        })
    return items


def consumer_items(svc: Services,
                   rows: Sequence[tuple[Subscription, Topic, str]]) -> list[dict[str, Any]]:
    """Per subscription: lag, pending, delivery rates, last delivery, live consumers (and,
    prefixed `_`, its latency samples and the time of its oldest entry not yet acknowledged)."""
    targets = [GroupTarget(topic.id, topic.partition_count,
                           group_name(sub.tenant_id, sub.consumer_group)) for sub, topic, _ in rows]
    views = inspect_groups(svc.redis, svc.keys, targets)
    ids = [sub.id for sub, _, _ in rows]
    rates = _rates(svc)
    windows = rates.windows(ids)
    latencies = rates.latencies(ids)
    instances = {instance for p in live_processes(svc.redis, svc.keys)
                 if p.get("kind") == "worker" and (instance := p.get("instance")) is not None}
    items = []
    for (sub, _topic, label), target in zip(rows, targets, strict=True):
        view = views.get((target.topic_id, target.group), GroupView())
        window = windows.get(sub.id, Window())
        items.append({
            "id": sub.id, "topic": label, "consumer_group": sub.consumer_group,
            "lag": view.lag, "pending": view.pending,
            "processing_rate": window.a_rate, "error_rate": window.b_rate,
            "last_consumed_at": sub.last_consumed_at,
            "active_consumers": live_consumers(view, sub.consumer_name, instances),
            "_latencies": latencies.get(sub.id, []),
            "_oldest_ms": view.oldest_ms,
        })
    return items


def _rates(svc: Services) -> Rates:
    return Rates(svc.redis, svc.keys)
