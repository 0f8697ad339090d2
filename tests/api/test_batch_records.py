"""Batches are written with COPY: every value survives it exactly, and constraint violations
surface as they do for an INSERT."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from models import Database, MessageRecord
from models.base import new_id, utcnow
from models.bulk import copy_rows

AWKWARD = [
    {"text": "tab\there, newline\nthere, return\r, backslash \\ and \\n literally"},
    "a JSON string payload",
    None,
    [1, 2.5, True, None, "ünïcødé ✓", {"nested": "\\\t"}],
    {"quote": "\"", "null char escaped": "\\u0000", "emoji": "📦"},
    0,
]


def test_batch_payloads_and_headers_survive_copy_exactly(tenant):
    tenant.create_queue("awkward")
    messages = [{"payload": payload, "message_id": f"m-{i}", "key": f"k\t{i}",
                 "headers": {"x-odd": "line\nbreak \\ tab\t"}, "correlation_id": "c\\1"}
                for i, payload in enumerate(AWKWARD)]
    response = tenant.admin.post("/publish/batch", {"topic": "awkward", "messages": messages})
    assert response.status_code == 201, response.json
    for message in messages:
        shown = tenant.admin.get(f"/messages/{message['message_id']}").json
        assert shown["payload"] == message["payload"]
        assert shown["headers"] == message["headers"]
        assert (shown["key"], shown["correlation_id"]) == (message["key"], "c\\1")
        assert shown["offset"]  # the offsets were written back to every record


def test_copy_of_a_duplicate_key_is_an_integrity_error(tenant, settings):
    topic = tenant.create_queue("dupes")
    database = Database(settings.database_url, pool_size=1)
    row = {"id": new_id(), "tenant_id": tenant.id, "topic_id": topic["id"],
           "message_id": "same", "headers": {}, "payload": {"a": 1}, "payload_size": 7,
           "partition_id": 0, "status": "published", "retry_count": 0,
           "published_at": utcnow(), "content_type": "application/json"}
    try:
        with database.session() as session, pytest.raises(IntegrityError):
            copy_rows(session, MessageRecord.__table__, [row, dict(row)])
    finally:
        database.dispose()
