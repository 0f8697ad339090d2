"""Every tenant endpoint against every role of its own tenant and another tenant's admin.

One table, from docs/api.md's role table: a role the call does not allow answers 403 FORBIDDEN
whatever the object; an allowed role is never refused (no 401/403) and never fails with 5xx;
another tenant's admin gets 404 for every object of this tenant, exactly as if it did not
exist.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from tests.conftest import Caller, TenantHandle

ADMIN, PRODUCER, CONSUMER = "admin", "producer", "consumer"
ANY = (ADMIN, PRODUCER, CONSUMER)
PUBLISHERS = (ADMIN, PRODUCER)
SUBSCRIBERS = (ADMIN, CONSUMER)


@dataclass(frozen=True)
class Call:
    method: str
    path: str  # with {topic} {sub} {message} {schedule} {subject} {schema} {key} placeholders
    roles: tuple[str, ...]
    body: Any = None
    destructive: bool = False  # only refused roles and other tenants are tried
    other_tenant: bool = True  # names an object of the tenant (404 for another tenant)


MESSAGE = {"payload": {"n": 1}}
CALLS = [
    Call("GET", "/queues", ANY, other_tenant=False),
    Call("POST", "/queues", (ADMIN,), {"name": "made-{uid}"}, other_tenant=False),
    Call("GET", "/queues/{topic}", ANY),
    Call("PUT", "/queues/{topic}", (ADMIN,), {"description": "changed"}),
    Call("POST", "/queues/{topic}/purge", (ADMIN,), destructive=True),
    Call("DELETE", "/queues/{topic}", (ADMIN,), destructive=True),
    Call("POST", "/publish", PUBLISHERS, {"topic": "{topic}", **MESSAGE}),
    Call("POST", "/publish/batch", PUBLISHERS, {"topic": "{topic}", "messages": [MESSAGE]}),
    Call("POST", "/topics/{topic}/publish", PUBLISHERS, MESSAGE),
    Call("POST", "/publish/delayed", PUBLISHERS, {"topic": "{topic}", "delay_ms": 60_000,
                                                   **MESSAGE}),
    Call("POST", "/publish/scheduled", PUBLISHERS,
         {"topic": "{topic}", "cron": "0 0 1 1 *", **MESSAGE}),
    Call("GET", "/messages/{message}", ANY),
    Call("DELETE", "/messages/{message}", PUBLISHERS, destructive=True),
    Call("GET", "/schedules", PUBLISHERS, other_tenant=False),
    Call("GET", "/schedules/{schedule}", PUBLISHERS),
    Call("DELETE", "/schedules/{schedule}", PUBLISHERS, destructive=True),
    Call("GET", "/subscriptions", SUBSCRIBERS, other_tenant=False),
    Call("POST", "/subscriptions", SUBSCRIBERS,
         {"topic": "{topic}", "consumer_group": "g-{uid}",
          "handler_config": {"type": "http", "url": "http://127.0.0.1:9/hook"}}),
    Call("GET", "/subscriptions/{sub}", SUBSCRIBERS),
    Call("PUT", "/subscriptions/{sub}", SUBSCRIBERS, {"max_retry_attempts": 2}),
    Call("POST", "/subscriptions/{sub}/pause", SUBSCRIBERS),
    Call("POST", "/subscriptions/{sub}/resume", SUBSCRIBERS),
    Call("POST", "/subscriptions/{sub}/seek", SUBSCRIBERS, {"to": "latest"}),
    Call("GET", "/subscriptions/{sub}/deliveries", SUBSCRIBERS),
    Call("GET", "/subscriptions/{sub}/dead-letters", SUBSCRIBERS),
    Call("POST", "/subscriptions/{sub}/dead-letters/redrive", SUBSCRIBERS, {"max_messages": 1}),
    Call("DELETE", "/subscriptions/{sub}/dead-letters", SUBSCRIBERS, destructive=True),
    Call("DELETE", "/subscriptions/{sub}", SUBSCRIBERS, destructive=True),
    Call("GET", "/schemas", ANY, other_tenant=False),
    Call("POST", "/schemas", (ADMIN,), {"subject": "s-{uid}", "format": "json",
                                        "definition": {"type": "object"},
                                        "compatibility": "NONE"}, other_tenant=False),
    Call("GET", "/schemas/{subject}/versions", ANY),
    Call("GET", "/schemas/{subject}/versions/latest", ANY),
    Call("GET", "/schemas/ids/{schema}", ANY),
    Call("GET", "/metrics", ANY, other_tenant=False),
    Call("GET", "/metrics/topics", ANY, other_tenant=False),
    Call("GET", "/metrics/consumers", ANY, other_tenant=False),
    Call("GET", "/api-keys", (ADMIN,), other_tenant=False),
    Call("POST", "/api-keys", (ADMIN,), {"name": "k-{uid}", "role": "producer"},
         other_tenant=False),
    Call("DELETE", "/api-keys/{key}", (ADMIN,), destructive=True),
]


@pytest.fixture
def objects(tenant: TenantHandle) -> dict[str, str]:
    """One object of every kind in `tenant`, named for the path placeholders."""
    topic = tenant.create_queue(f"orders-{uuid.uuid4().hex[:6]}")["name"]
    admin = tenant.admin
    sub = admin.post("/subscriptions", {
        "topic": topic, "consumer_group": "billing",
        "handler_config": {"type": "http", "url": "http://127.0.0.1:9/hook"}}).json["id"]
    message = admin.post("/publish/delayed", {"topic": topic, "delay_ms": 3_600_000,
                                              **MESSAGE}).json["message_id"]
    schedule = admin.post("/publish/scheduled", {"topic": topic, "cron": "0 0 1 1 *",
                                                 **MESSAGE}).json["schedule_id"]
    schema = admin.post("/schemas", {"subject": "orders-value", "format": "json",
                                     "definition": {"type": "object"},
                                     "compatibility": "NONE"}).json["id"]
    key = admin.post("/api-keys", {"name": "spare", "role": "consumer"}).json["id"]
    return {"topic": topic, "sub": sub, "message": message, "schedule": schedule,
            "subject": "orders-value", "schema": schema, "key": key}


def _fill(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format(uid=uuid.uuid4().hex[:8], **names)
    if isinstance(value, dict):
        return {k: _fill(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, names) for v in value]
    return value


def _call(caller: Caller, call: Call, names: dict[str, str]) -> Any:
    return caller.request(call.method, _fill(call.path, names),
                          json=_fill(call.body, names) if call.body is not None else None)


def test_every_endpoint_answers_each_role_as_the_contract_says(tenant, objects):
    callers = {ADMIN: tenant.admin, PRODUCER: tenant.key(PRODUCER),
               CONSUMER: tenant.key(CONSUMER)}
    problems = []
    for call in CALLS:
        for role, caller in callers.items():
            if role not in call.roles:
                response = _call(caller, call, objects)
                if response.status_code != 403 or response.json["error"]["code"] != "FORBIDDEN":
                    problems.append(f"{role} {call.method} {call.path}: "
                                    f"{response.status_code}, expected 403")
            elif not call.destructive:
                response = _call(caller, call, objects)
                if response.status_code in (401, 403) or response.status_code >= 500:
                    problems.append(f"{role} {call.method} {call.path}: "
                                    f"{response.status_code} {response.json}")
    assert problems == []


def test_another_tenants_admin_finds_nothing(tenant, other_tenant, objects):
    problems = []
    for call in CALLS:
        if not call.other_tenant:
            continue
        response = _call(other_tenant.admin, call, objects)
        if response.status_code != 404:
            problems.append(f"{call.method} {call.path}: {response.status_code}")
    assert problems == []
    # ... and every object is still there for its own tenant.
    assert tenant.admin.get(f"/queues/{objects['topic']}").status_code == 200
    assert tenant.admin.get(f"/subscriptions/{objects['sub']}").status_code == 200
    assert tenant.admin.get(f"/messages/{objects['message']}").json["status"] == "scheduled"
