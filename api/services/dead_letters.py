"""A subscription's dead letters: listed (decoded for their tenant), purged, and redriven
to that subscription only."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from api.dependencies import Services
from api.services.formats import shown_dead_letters
from broker import dead_letters
from broker.delivery import DEFAULT_POOL
from models import Subscription

DEFAULT_REDRIVE = 100


def list_dead_letters(session: Session, svc: Services, subscription: Subscription, *,
                      limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """One page of the subscription's dead letters, newest first, and the next cursor."""
    items, next_cursor = dead_letters.list_entries(svc.redis, svc.keys, subscription.id,
                                                   limit=limit, after=cursor)
    return shown_dead_letters(session, svc.settings, items, subscription.topic_id), next_cursor


def purge_dead_letters(svc: Services, subscription: Subscription) -> int:
    return dead_letters.purge(svc.redis, svc.keys, subscription.id)


def redrive_dead_letters(svc: Services, subscription: Subscription, *,
                         ids: list[str] | None, max_messages: int | None) -> int:
    """Deliver the dead letters named by `ids`, or the oldest `max_messages` (default 100),
    again to this subscription only; attempts restart at 1."""
    count = DEFAULT_REDRIVE if max_messages is None else max_messages
    return dead_letters.redrive(svc.redis, svc.keys, subscription.id, DEFAULT_POOL, ids=ids,
                                max_messages=count)
