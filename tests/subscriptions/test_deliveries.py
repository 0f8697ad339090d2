"""`GET /subscriptions/{id}/deliveries`: consumption records, newest first."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from models import ConsumptionRecord
from tests.subscriptions.helpers import subscribe

START = datetime.now(UTC).replace(microsecond=0)  # in a day the test database holds


def _at(n: int) -> str:
    return (START + timedelta(seconds=n)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _record(app, tenant, sub, n, status, **fields):
    with app.extensions["mq"].database.session() as session:
        session.add(ConsumptionRecord(
            tenant_id=tenant.id, subscription_id=sub["id"], message_id=f"m-{n}",
            consumer_instance="worker-1", status=status,
            consumed_at=START + timedelta(seconds=n), **fields))
        session.commit()


def test_deliveries_newest_first_with_attempt_numbers(app, tenant):
    sub = subscribe(tenant, tenant.create_queue()["name"])
    _record(app, tenant, sub, 1, "failed", retry_count=0, processing_time_ms=12,
            error_message="HTTP 503", response_status=503)
    _record(app, tenant, sub, 2, "success", retry_count=1, processing_time_ms=8,
            response_status=200)
    _record(app, tenant, sub, 3, "dead_letter", retry_count=3, error_message="boom")
    response = tenant.admin.get(f"/subscriptions/{sub['id']}/deliveries")
    assert response.status_code == 200, response.json
    items = response.json["items"]
    assert [i["message_id"] for i in items] == ["m-3", "m-2", "m-1"]
    assert items[0] == {"message_id": "m-3", "status": "dead_letter", "attempt": 4,
                        "processing_time_ms": None, "error_message": "boom",
                        "consumed_at": _at(3)}
    assert items[1]["attempt"] == 2 and items[1]["response_status"] == 200
    assert items[2] == {"message_id": "m-1", "status": "failed", "attempt": 1,
                        "processing_time_ms": 12, "error_message": "HTTP 503",
                        "response_status": 503, "consumed_at": _at(1)}


def test_deliveries_filter_and_limit(app, tenant):
    sub = subscribe(tenant, tenant.create_queue()["name"])
    other = subscribe(tenant, tenant.create_queue()["name"])
    for n in range(5):
        _record(app, tenant, sub, n, "success" if n % 2 else "failed")
    _record(app, tenant, other, 9, "success")
    path = f"/subscriptions/{sub['id']}/deliveries"
    assert [i["message_id"] for i in tenant.admin.get(f"{path}?status=success").json["items"]] \
        == ["m-3", "m-1"]
    assert [i["message_id"] for i in tenant.admin.get(f"{path}?limit=2").json["items"]] == \
        ["m-4", "m-3"]
    assert tenant.admin.get(f"{path}?status=dead_letter").json["items"] == []
    for bad in ("status=lost", "limit=0", "limit=1001", "limit=x"):
        assert tenant.admin.get(f"{path}?{bad}").status_code == 422, bad


def test_no_records_is_an_empty_list(tenant):
    sub = subscribe(tenant, tenant.create_queue()["name"])
    response = tenant.admin.get(f"/subscriptions/{sub['id']}/deliveries")
    assert response.status_code == 200
    assert response.json == {"items": [], "next_cursor": None}


def test_deliveries_page_newest_first_without_skips_or_repeats(app, tenant):
    sub = subscribe(tenant, tenant.create_queue()["name"])
    for n in range(5):
        _record(app, tenant, sub, n, "success")
    path = f"/subscriptions/{sub['id']}/deliveries?limit=2"
    first = tenant.admin.get(path).json
    assert [i["message_id"] for i in first["items"]] == ["m-4", "m-3"]
    _record(app, tenant, sub, 7, "success")  # a newer attempt arrives while paging
    second = tenant.admin.get(f"{path}&cursor={first['next_cursor']}").json
    assert [i["message_id"] for i in second["items"]] == ["m-2", "m-1"]
    third = tenant.admin.get(f"{path}&cursor={second['next_cursor']}").json
    assert [i["message_id"] for i in third["items"]] == ["m-0"]
    assert third["next_cursor"] is None
    bad = tenant.admin.get(f"{path}&cursor=not-a-cursor")
    assert bad.status_code == 422 and bad.json["error"]["code"] == "VALIDATION_ERROR"
