"""Cancelling delayed and scheduled messages.

They are published by the group writer like any message (`publishing.group`): the record is
committed with status `scheduled`, then the message is parked in the delay set
(`broker.delays`); `202` is answered only after both. If Redis refuses the park, the record
is deleted again and the client gets `503`; should that delete fail too, the record stays
`scheduled` and the scheduler's rebuild (the database is the source of truth) parks it.
The scheduler releases it into the stream when due and then marks the record `published`
with its offset.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from broker.delays import DelaySet
from models import MessageRecord
from mq.errors import Conflict

MAX_DELAY = timedelta(days=30)


def cancel(session: Session, delays: DelaySet, record: MessageRecord) -> None:
    """Cancel a scheduled message; `Conflict` once it was released (or is not scheduled).

    The delay set decides: whoever removes the member first (this cancel, or the releaser's
    atomic move) wins. A `scheduled` record that is neither waiting nor recently released was
    lost by Redis and not yet rebuilt: cancelling it in the database is enough, as the
    rebuild re-checks the status of what it parks.
    """
    if record.status != "scheduled":
        raise Conflict(f"message '{record.message_id}' is {record.status}, not scheduled")
    if not delays.cancel(record.id) and delays.released_offsets([record.id]):
        raise Conflict(f"message '{record.message_id}' was released already")
    records = MessageRecord.__table__
    done = session.execute(
        update(records).where(records.c.id == record.id, records.c.status == "scheduled")
        .values(status="cancelled"))
    session.commit()
    if done.rowcount != 1:
        raise Conflict(f"message '{record.message_id}' was released already")
