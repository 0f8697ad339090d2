"""What each dashboard page shows, assembled from the service layer the REST API uses.

Every look-up is scoped to the viewer's tenant by the same service functions as the REST
endpoints (`find_topic`, `find_subscription`, `find_message`, ...); this module only gathers
and shapes. Values stay plain data: the templates escape all of them.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select

from api.dependencies import Principal, Scope
from api.services.dead_letters import list_dead_letters
from api.services.formats import shown_payload
from api.services.lookups import find_subscription, find_topic
from api.services.messages import find_message, message_view
from api.services.metrics import consumer_items, own_subscriptions, own_topics, topic_items
from api.services.quotas import tenant_quotas
from api.services.registry import latest_versions_query, schema_version, subject_versions
from api.services.schedules import schedule_views
from api.services.subscriptions import (
    deliveries_query,
    delivery_view,
    subscription_with_stats,
)
from api.services.topics import topic_stats
from broker.heartbeats import live_processes
from broker.rates import HISTORY_MIN, Rates
from models import ConsumptionRecord, MessageRecord, Schedule, Schema, Subscription, Tenant, Topic
from models.base import utcnow

#: Characters of a payload shown in a list.
PREVIEW_CHARS = 160
NEWEST_MESSAGES = 20
PAGE_ROWS = 50


def preview(value: Any, limit: int = PREVIEW_CHARS) -> str:
    """A value as compact JSON text, cut to `limit` characters."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False,
                                                           separators=(",", ":"))
    return text if len(text) <= limit else text[:limit - 1] + "…"


def pretty(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=2, default=str)


def sparkline(counts: Sequence[int], width: int = 120, height: int = 24) -> str:
    """SVG polyline points of per-minute counts (drawn by the template)."""
    top = max(counts) if counts and max(counts) > 0 else 1
    step = width / max(1, len(counts) - 1)
    return " ".join(f"{i * step:.1f},{height - (c / top) * (height - 2) - 1:.1f}"
                    for i, c in enumerate(counts))


# -- overview ----------------------------------------------------------------------------------
def overview(here: Scope, caller: Principal) -> dict[str, Any]:
    """Every queue of the tenant with its rates, lag, oldest pending age, dead letters and a
    15-minute history; the tenant's totals per minute; live workers."""
    session, svc = here.session, here.services
    topics = own_topics(session, caller.tenant_id)
    items = topic_items(session, svc, topics)
    subs = own_subscriptions(session, caller.tenant_id)
    consumers = consumer_items(svc, subs)
    dead = dead_letter_counts(here, [sub.id for sub, _, _ in subs])
    rates = Rates(svc.redis, svc.keys)
    history = rates.history([t.id for t in topics] + [sub.id for sub, _, _ in subs])
    per_topic: dict[str, list[tuple[Subscription, dict[str, Any]]]] = {}
    for (sub, topic, _), item in zip(subs, consumers, strict=True):
        per_topic.setdefault(topic.id, []).append((sub, item))
    now_ms = time.time() * 1000
    queues = []
    for topic, item in zip(topics, items, strict=True):
        mine = per_topic.get(topic.id, [])
        published = [a for a, _ in history.get(topic.id, [])]
        delivered = _sum_series([[a + b for a, b in history.get(s.id, [])] for s, _ in mine])
        oldest = [c["_oldest_ms"] for _, c in mine if c["_oldest_ms"] is not None]
        queues.append({
            "name": topic.name, "status": topic.status, "partitions": topic.partition_count,
            "length": item["length"], "lag": item["lag"],
            "publish_rate": item["publish_rate"],
            "delivery_rate": round(sum(c["processing_rate"] + c["error_rate"]
                                       for _, c in mine), 3),
            "oldest_pending_s": round((now_ms - min(oldest)) / 1000, 1) if oldest else None,
            "dead_letters": sum(dead.get(s.id, 0) for s, _ in mine),
            "subscriptions": len(mine),
            "published_line": sparkline(published), "delivered_line": sparkline(delivered),
            "published_15m": sum(published), "delivered_15m": sum(delivered),
        })
    totals = {
        "published": _sum_series([[a for a, _ in history.get(t.id, [])] for t in topics]),
        "delivered": _sum_series([[a + b for a, b in history.get(s.id, [])] for s, _, _ in subs]),
        "minutes": HISTORY_MIN,
        "end": int(time.time()) // 60 * 60,
    }
    workers = [b for b in processes(here) if b.get("kind") == "worker"]
    return {"queues": queues, "totals": totals, "workers": workers}


def _sum_series(series: list[list[int]]) -> list[int]:
    return [sum(values) for values in zip(*series, strict=True)] if series else [0] * HISTORY_MIN


def dead_letter_counts(here: Scope, subscription_ids: list[str]) -> dict[str, int]:
    """How many dead letters each subscription holds."""
    svc = here.services
    pipe = svc.redis.pipeline(transaction=False)
    for sid in subscription_ids:
        pipe.xlen(svc.keys.dead_letters(sid))
    return dict(zip(subscription_ids, pipe.execute(), strict=True)) if subscription_ids else {}


def processes(here: Scope) -> list[dict[str, Any]]:
    """Live worker and scheduler processes from their heartbeats, workers first."""
    beats = live_processes(here.services.redis, here.services.keys)
    return sorted(beats, key=lambda b: (b.get("kind") != "worker", b.get("host", ""),
                                        b.get("pid", 0)))


def operator_overview(here: Scope) -> dict[str, Any]:
    """Tenants with their effective quotas and what they use; every live process."""
    session = here.session
    tenants = list(session.scalars(select(Tenant).order_by(Tenant.name).limit(500)))
    topics = dict(session.execute(select(Topic.tenant_id, func.count())
                                  .group_by(Topic.tenant_id)).all())
    subscriptions = dict(session.execute(select(Subscription.tenant_id, func.count())
                                         .group_by(Subscription.tenant_id)).all())
    rows = [{"id": t.id, "name": t.name, "created_at": t.created_at,
             "quotas": dataclasses.asdict(tenant_quotas(here, t.id)),
             "topics": topics.get(t.id, 0), "subscriptions": subscriptions.get(t.id, 0)}
            for t in tenants]
    return {"tenants": rows, "processes": processes(here)}


# -- a queue -----------------------------------------------------------------------------------
def queue(here: Scope, caller: Principal, name: str) -> dict[str, Any]:
    """A queue's partitions, its subscriptions and its newest messages."""
    session, svc = here.session, here.services
    topic = find_topic(session, caller.tenant_id, name)
    kept = timedelta(milliseconds=topic.retention_ms or 86_400_000)
    records = session.scalars(
        select(MessageRecord)
        .where(MessageRecord.tenant_id == caller.tenant_id, MessageRecord.topic_id == topic.id,
               MessageRecord.published_at > utcnow() - kept)
        .order_by(MessageRecord.published_at.desc()).limit(NEWEST_MESSAGES))
    messages = []
    for record in records:
        payload, headers = shown_payload(session, svc.settings, record, topic)
        messages.append({"message_id": record.message_id, "key": record.message_key,
                         "headers": preview(headers), "payload": preview(payload),
                         "status": record.status, "partition": record.partition_id,
                         "offset": record.offset_value, "published_at": record.published_at})
    subs = session.scalars(select(Subscription).where(
        Subscription.tenant_id == caller.tenant_id, Subscription.topic_id == topic.id)
        .order_by(Subscription.created_at))
    return {"topic": topic, "stats": topic_stats(session, svc.streams, topic),
            "subscriptions": list(subs), "messages": messages}


# -- a subscription ----------------------------------------------------------------------------
def subscription(here: Scope, caller: Principal, subscription_id: str,
                 status: str | None) -> dict[str, Any]:
    """A subscription with its statistics, latest deliveries (of one status, if given) and
    dead letters."""
    session, svc = here.session, here.services
    view = subscription_with_stats(session, svc, caller, subscription_id)
    found = find_subscription(session, caller, subscription_id)
    args = {"status": status} if status else {}
    rows = session.scalars(deliveries_query(found, args, svc.settings)
                           .order_by(ConsumptionRecord.consumed_at.desc()).limit(PAGE_ROWS))
    deliveries = [{**delivery_view(row), "response_excerpt": preview(row.response_excerpt or "")}
                  for row in rows]
    letters, more = list_dead_letters(session, svc, found, limit=PAGE_ROWS, cursor=None)
    for letter in letters:
        letter["payload_preview"] = preview(letter.get("payload"))
    dead_total = dead_letter_counts(here, [found.id])[found.id]
    return {"subscription": view, "deliveries": deliveries, "dead_letters": letters,
            "dead_letters_total": dead_total, "dead_letters_more": more is not None}


# -- a message ---------------------------------------------------------------------------------
def message(here: Scope, caller: Principal, message_id: str) -> dict[str, Any]:
    """A message, its delivery state per subscription and every attempt, oldest first."""
    session = here.session
    record, topic = find_message(session, here.services.settings, caller.tenant_id, message_id)
    view = message_view(here, record, topic)
    attempts = session.scalars(
        select(ConsumptionRecord)
        .where(ConsumptionRecord.tenant_id == caller.tenant_id,
               ConsumptionRecord.message_id == record.message_id,
               ConsumptionRecord.consumed_at >= record.published_at - timedelta(hours=1))
        .order_by(ConsumptionRecord.consumed_at))
    by_subscription: dict[str, list[dict[str, Any]]] = {}
    for row in attempts:
        by_subscription.setdefault(row.subscription_id, []).append(
            {**delivery_view(row), "response_excerpt": preview(row.response_excerpt or "")})
    for delivery in view["deliveries"]:
        delivery["attempt_list"] = by_subscription.get(delivery["subscription_id"], [])
    view["payload_text"] = pretty(view["payload"])
    return view


# -- schedules ---------------------------------------------------------------------------------
def schedules(here: Scope, caller: Principal) -> dict[str, Any]:
    """Delayed and scheduled messages waiting for their time, and recurring schedules."""
    session = here.session
    recurring = list(session.scalars(select(Schedule).where(Schedule.tenant_id == caller.tenant_id)
                                     .order_by(Schedule.created_at).limit(500)))
    waiting = session.execute(
        select(MessageRecord, Topic.name)
        .join(Topic, Topic.id == MessageRecord.topic_id)
        .where(MessageRecord.tenant_id == caller.tenant_id, MessageRecord.status == "scheduled")
        .order_by(MessageRecord.scheduled_at).limit(PAGE_ROWS * 4)).all()
    delayed = [{"message_id": r.message_id, "topic": name, "scheduled_at": r.scheduled_at,
                "published_at": r.published_at} for r, name in waiting]
    return {"recurring": schedule_views(session, recurring), "delayed": delayed}


# -- schemas -----------------------------------------------------------------------------------
def schemas(here: Scope, caller: Principal, subject: str | None,
            version: str | None) -> dict[str, Any]:
    """Every subject with its latest version; one subject's versions and a definition."""
    session = here.session
    subjects: list[Schema] = list(session.scalars(latest_versions_query(caller.tenant_id)
                                                  .limit(500)))
    shown = None
    versions: list[int] = []
    if subject:
        versions = subject_versions(session, caller.tenant_id, subject)
        row = schema_version(session, caller.tenant_id, subject, version or "latest")
        shown = {"subject": row.subject, "version": row.version, "format": row.format,
                 "definition": pretty(row.definition), "id": row.id}
    return {"subjects": subjects, "subject": subject, "versions": versions, "shown": shown}
