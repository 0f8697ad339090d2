"""Subscriptions as the worker sees them: loaded from the database into broker routes.

A full load at start and every `RESYNC_S`; control events (subscription or topic changed)
reload just what changed. Dead-letter topics are created here on first use, with their source
topic's compression and encryption. The registry is the broker's `WorkerHooks`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import replace

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from broker.dead_letters import DEAD_LETTER_SUFFIX, DeadLetterEntry
from broker.delivery import DEFAULT_POOL, Route, RouteTable
from broker.envelope import Envelope
from broker.keys import group_name
from formats.avro import avro_schema_of
from formats.codec import Codec, topic_codec
from models import Database, Subscription, Topic
from workers.dead_letters import DeadLetterMessages

log = logging.getLogger(__name__)


def to_route(sub: Subscription, topic: Topic) -> Route:
    return Route(
        subscription_id=sub.id,
        tenant_id=sub.tenant_id,
        topic_id=topic.id,
        topic_name=topic.name,
        partition_count=topic.partition_count,
        group=group_name(sub.tenant_id, sub.consumer_group),
        consumer_name=sub.consumer_name,
        active=sub.status == "active" and topic.status == "active",
        session_timeout_ms=sub.session_timeout_ms,
        max_retry_attempts=sub.max_retry_attempts,
        retry_delay_ms=sub.retry_delay_ms,
        max_retry_delay_ms=sub.max_retry_delay_ms,
        handler_config=dict(sub.handler_config or {}),
        message_filter=sub.message_filter,
        dead_letter_topic=sub.dead_letter_queue or topic.name + DEAD_LETTER_SUFFIX,
        dead_letter_expired=bool(sub.dead_letter_expired),
        pool=DEFAULT_POOL,
        avro_schema=avro_schema_of(topic.schema_definition),
        topic_tenant_id=topic.tenant_id,
    )


def _inherited_storage(source: Topic | None) -> dict[str, str]:
    """A dead-letter topic created on first use stores its messages as its source topic does
    (compression, encryption): an encrypted topic's dead letters stay encrypted at rest, and
    the dead-letter topic's subscribers can still read them."""
    if source is None:
        return {}
    return {"compression_type": source.compression_type or "none",
            "encryption": source.encryption or "none"}


class SubscriptionRegistry:
    """Keeps the broker's routes in step with the database (a `broker.hooks.WorkerHooks`)."""

    def __init__(self, database: Database, routes: RouteTable, pools: Iterable[str],
                 letters: DeadLetterMessages) -> None:
        self.database = database
        self.routes = routes
        self.pools = set(pools)
        self.letters = letters
        self._lock = threading.Lock()
        self._dead_letter_topics: dict[tuple[str, str], tuple[str, Codec]] = {}

    def resync(self) -> int:
        """Load every subscription; returns how many this worker serves."""
        with self.database.session() as session:
            rows = session.execute(
                select(Subscription, Topic).join(Topic, Topic.id == Subscription.topic_id)
            ).all()
        routes = {sub.id: to_route(sub, topic) for sub, topic in rows}
        with self._lock:
            self.routes.replace({k: r for k, r in routes.items() if r.pool in self.pools})
        return len(self.routes)

    def apply_control_events(self, events: list[dict[str, str]]) -> None:
        """Reload the subscriptions named by control events (directly or through a topic)."""
        sub_ids = {e["id"] for e in events if e.get("kind") == "subscription"}
        topic_ids = {e["id"] for e in events if e.get("kind") == "topic"}
        if not sub_ids and not topic_ids:
            return
        with self.database.session() as session:
            rows = session.execute(
                select(Subscription, Topic).join(Topic, Topic.id == Subscription.topic_id)
                .where(or_(Subscription.id.in_(sub_ids), Subscription.topic_id.in_(topic_ids)))
            ).all()
        fresh = {sub.id: to_route(sub, topic) for sub, topic in rows}
        for cache_key, (topic_id, _) in list(self._dead_letter_topics.items()):
            if topic_id in topic_ids:  # a dead-letter topic changed or went: look it up again
                self._dead_letter_topics.pop(cache_key, None)
        with self._lock:
            routes = dict(self.routes.all())
            for sid in sub_ids | {s for s, r in routes.items() if r.topic_id in topic_ids}:
                routes.pop(sid, None)
            routes.update({k: r for k, r in fresh.items() if r.pool in self.pools})
            self.routes.replace(routes)

    def dead_letter_topic(self, route: Route) -> str:
        """The id of the route's dead-letter topic, created (1 partition) on first use."""
        return self._dead_letter_topic(route)[0]

    def dead_letter_message(self, route: Route, envelope: Envelope,
                            entry: DeadLetterEntry) -> Envelope:
        """What the route's dead-letter topic stores of a dead letter (see
        `DeadLetterMessages.build`)."""
        return self.letters.build(route, envelope, entry, self.dead_letter_codec(route))

    def dead_letter_codec(self, route: Route) -> Codec:
        """How the route's dead-letter topic stores its messages: its compression and
        encryption; always JSON (a dead-letter entry is a JSON object)."""
        return self._dead_letter_topic(route)[1]

    def _dead_letter_topic(self, route: Route) -> tuple[str, Codec]:
        cache_key = (route.tenant_id, route.dead_letter_topic)
        known = self._dead_letter_topics.get(cache_key)
        if known:
            return known
        with self.database.session() as session:
            topic = self._find_topic(session, *cache_key)
            if topic is None:
                source = session.get(Topic, route.topic_id)
                session.add(Topic(tenant_id=route.tenant_id, name=route.dead_letter_topic,
                                  description=f"dead letters of topic '{route.topic_name}'",
                                  **_inherited_storage(source)))
                try:
                    session.commit()
                except IntegrityError:
                    session.rollback()
                topic = self._find_topic(session, *cache_key)
            assert topic is not None
            codec = replace(topic_codec(topic), message_format="json", schema=None)
            known = self._dead_letter_topics[cache_key] = (topic.id, codec)
        return known

    @staticmethod
    def _find_topic(session: Session, tenant_id: str, name: str) -> Topic | None:
        return session.scalar(select(Topic).where(Topic.tenant_id == tenant_id,
                                                  Topic.name == name))
