"""Bearer authentication and the role table of docs/api.md (Conventions, Roles)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.api.conftest import assert_error
from tests.conftest import OPERATOR_TOKEN, Caller, TenantHandle


@dataclass(frozen=True)
class Call:
    """One endpoint: how to call it (after `setup` made what it needs) and what success is."""

    name: str
    roles: tuple[str, ...]
    success: int
    send: Callable[[Caller, dict[str, Any]], Any]


def _setup(tenant: TenantHandle) -> dict[str, Any]:
    queue = tenant.create_queue(f"q-{uuid.uuid4().hex[:8]}")
    published = tenant.admin.post("/publish", {"topic": queue["name"], "payload": 1}).json
    key = tenant.admin.post("/api-keys", {"name": f"k-{uuid.uuid4().hex[:6]}",
                                          "role": "consumer"}).json
    return {"queue": queue["name"], "message_id": published["message_id"], "key_id": key["id"]}


ADMIN = ("admin",)
PRODUCERS = ("admin", "producer")
EVERYONE = ("admin", "producer", "consumer")

CALLS = [
    Call("create queue", ADMIN, 201,
         lambda c, o: c.post("/queues", {"name": f"new-{uuid.uuid4().hex[:8]}"})),
    Call("list queues", EVERYONE, 200, lambda c, o: c.get("/queues")),
    Call("get queue", EVERYONE, 200, lambda c, o: c.get(f"/queues/{o['queue']}")),
    Call("update queue", ADMIN, 200,
         lambda c, o: c.put(f"/queues/{o['queue']}", {"description": "d"})),
    Call("delete queue", ADMIN, 204, lambda c, o: c.delete(f"/queues/{o['queue']}")),
    Call("purge queue", ADMIN, 200, lambda c, o: c.post(f"/queues/{o['queue']}/purge")),
    Call("create key", ADMIN, 201,
         lambda c, o: c.post("/api-keys", {"name": uuid.uuid4().hex, "role": "producer"})),
    Call("list keys", ADMIN, 200, lambda c, o: c.get("/api-keys")),
    Call("delete key", ADMIN, 204, lambda c, o: c.delete(f"/api-keys/{o['key_id']}")),
    Call("publish", PRODUCERS, 201,
         lambda c, o: c.post("/publish", {"topic": o["queue"], "payload": {"a": 1}})),
    Call("publish batch", PRODUCERS, 201,
         lambda c, o: c.post("/publish/batch", {"topic": o["queue"],
                                                "messages": [{"payload": 1}]})),
    Call("publish to topic", PRODUCERS, 201,
         lambda c, o: c.post(f"/topics/{o['queue']}/publish", {"payload": 1})),
    Call("batch to topic", PRODUCERS, 201,
         lambda c, o: c.post(f"/topics/{o['queue']}/publish", {"messages": [{"payload": 1}]})),
    Call("get message", EVERYONE, 200, lambda c, o: c.get(f"/messages/{o['message_id']}")),
]


@pytest.mark.parametrize("call", CALLS, ids=[c.name for c in CALLS])
@pytest.mark.parametrize("role", ["admin", "producer", "consumer"])
def test_role_table(tenant, call, role):
    objects = _setup(tenant)
    caller = tenant.admin if role == "admin" else tenant.key(role)
    response = call.send(caller, objects)
    if role in call.roles:
        assert response.status_code == call.success, (response.status_code, response.json)
    else:
        details = assert_error(response, 403, "FORBIDDEN")
        assert details == {}
        _assert_untouched(tenant, objects)


def _assert_untouched(tenant: TenantHandle, objects: dict[str, Any]) -> None:
    queue = tenant.admin.get(f"/queues/{objects['queue']}")
    assert queue.status_code == 200
    assert queue.json["description"] == ""
    assert queue.json["stats"]["length"] == 1
    assert objects["key_id"] in [k["id"] for k in tenant.admin.get("/api-keys").json["items"]]


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic abc", "bearer",
                                    "Token mq_abc", "Bearer mq_unknown", "Bearer " + "x" * 5000,
                                    f"Bearer {OPERATOR_TOKEN}"])
def test_missing_malformed_unknown_or_operator_tokens_are_401(tenant, client, header):
    objects = _setup(tenant)
    headers = {} if header is None else {"Authorization": header}
    caller = _WithHeaders(Caller(client, None), headers)
    for call in CALLS:
        response = call.send(caller, objects)
        assert_error(response, 401, "UNAUTHORIZED")
    _assert_untouched(tenant, objects)


@dataclass
class _WithHeaders:
    caller: Caller
    headers: dict[str, str]

    def _call(self, method: str, path: str, json: Any = None) -> Any:
        return self.caller.request(method, path, json=json, headers=self.headers)

    def get(self, path: str) -> Any:
        return self._call("GET", path)

    def post(self, path: str, json: Any = None) -> Any:
        return self._call("POST", path, json)

    def put(self, path: str, json: Any = None) -> Any:
        return self._call("PUT", path, json)

    def delete(self, path: str) -> Any:
        return self._call("DELETE", path)


def test_bearer_scheme_is_case_insensitive(tenant, client):
    token = tenant.admin.token
    response = Caller(client, None).get("/queues", headers={"Authorization": f"bearer {token}"})
    assert response.status_code == 200


def test_operator_token_and_tenant_keys_never_stand_in_for_each_other(operator, client):
    """The operator token never passes as a tenant key, and a tenant key never as operator."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    admin_key = operator.post("/tenants", {"name": name}).json["admin_key"]
    assert_error(Caller(client, admin_key).get("/tenants"), 403, "FORBIDDEN")
    assert_error(operator.get("/queues"), 401, "UNAUTHORIZED")
    assert_error(operator.get("/api-keys"), 401, "UNAUTHORIZED")


@pytest.mark.parametrize("path", ["/health", "/status"])
def test_health_and_status_need_no_key(client, path):
    from tests.conftest import API

    assert client.get(API + path).status_code == 200
