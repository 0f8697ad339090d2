"""Stream entries rebuilt from message records (the database is the source of truth)."""

from __future__ import annotations

from broker.envelope import Envelope
from models import MessageRecord
from publishing.messages import Prepared


def due_ms(record: MessageRecord) -> int:
    due = record.scheduled_at or record.published_at
    return int(due.timestamp() * 1000)


def record_envelope(record: MessageRecord) -> Envelope:
    """The stream entry of a record, as it was built when it was published."""
    return Prepared.of_record(record).envelope
