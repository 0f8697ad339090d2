"""The schema registry endpoints, roles, tenant isolation, and publish-time validation."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.conftest import assert_error

ORDER_V1 = {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}
ORDER_V2 = {"type": "object", "required": ["id"],
            "properties": {"id": {"type": "string"}, "qty": {"type": "integer"}}}
AVRO_V1 = {"type": "record", "name": "Order", "fields": [{"name": "id", "type": "string"}]}
PROTO = 'syntax = "proto3";\nmessage Order { string id = 1; int32 qty = 2; }'


def subject() -> str:
    return f"orders-{uuid.uuid4().hex[:8]}"


def register(caller, name: str, definition: Any, fmt: str = "json", **extra: Any):
    return caller.post("/schemas", {"subject": name, "format": fmt, "definition": definition,
                                    **extra})


def test_register_read_versions_latest_and_by_id(tenant):
    name = subject()
    first = register(tenant.admin, name, ORDER_V1)
    assert first.status_code == 201, first.json
    assert set(first.json) == {"id", "subject", "version", "format"}
    assert (first.json["subject"], first.json["version"], first.json["format"]) == (name, 1, "json")
    second = register(tenant.admin, name, ORDER_V2)
    assert second.status_code == 201 and second.json["version"] == 2

    versions = tenant.admin.get(f"/schemas/{name}/versions")
    assert versions.status_code == 200 and versions.json == {"subject": name, "versions": [1, 2]}
    one = tenant.admin.get(f"/schemas/{name}/versions/1").json
    assert one == {"id": first.json["id"], "subject": name, "version": 1, "format": "json",
                   "definition": ORDER_V1, "compatibility": "BACKWARD"}
    latest = tenant.admin.get(f"/schemas/{name}/versions/latest").json
    assert latest["version"] == 2 and latest["definition"] == ORDER_V2
    by_id = tenant.admin.get(f"/schemas/ids/{second.json['id']}")
    assert by_id.status_code == 200 and by_id.json == latest


def test_same_definition_answers_the_existing_version(tenant):
    name = subject()
    first = register(tenant.admin, name, ORDER_V1)
    again = register(tenant.admin, name, dict(reversed(list(ORDER_V1.items()))))
    assert again.status_code == 200
    assert again.json == first.json
    assert tenant.admin.get(f"/schemas/{name}/versions").json["versions"] == [1]


def test_incompatible_version_is_409_with_the_reason(tenant):
    name = subject()
    register(tenant.admin, name, ORDER_V1)
    breaking = {"type": "object", "required": ["id", "qty"],
                "properties": {"id": {"type": "string"}, "qty": {"type": "integer"}}}
    details = assert_error(register(tenant.admin, name, breaking), 409, "SCHEMA_INCOMPATIBLE")
    assert any("qty" in reason for reason in details["definition"])
    answer = register(tenant.admin, name, breaking, compatibility="NONE")
    assert answer.status_code == 201 and answer.json["version"] == 2


def test_avro_and_protobuf_register_and_check_compatibility(tenant):
    avro_name, proto_name = subject(), subject()
    assert register(tenant.admin, avro_name, AVRO_V1, "avro").status_code == 201
    added = {**AVRO_V1, "fields": [*AVRO_V1["fields"], {"name": "qty", "type": "int"}]}
    assert_error(register(tenant.admin, avro_name, added, "avro"), 409, "SCHEMA_INCOMPATIBLE")
    defaulted = {**AVRO_V1,
                 "fields": [*AVRO_V1["fields"], {"name": "qty", "type": "int", "default": 0}]}
    assert register(tenant.admin, avro_name, defaulted, "avro", compatibility="FULL") \
        .status_code == 201
    assert register(tenant.admin, proto_name, PROTO, "protobuf").status_code == 201
    retyped = PROTO.replace("int32 qty", "string qty")
    assert_error(register(tenant.admin, proto_name, retyped, "protobuf"), 409,
                 "SCHEMA_INCOMPATIBLE")
    assert_error(register(tenant.admin, proto_name, ORDER_V1, "json"), 409, "SCHEMA_INCOMPATIBLE")


def test_invalid_bodies_are_422(tenant):
    for body in ({"subject": "a b", "format": "json", "definition": ORDER_V1},
                 {"subject": "x" * 256, "format": "json", "definition": ORDER_V1},
                 {"subject": "ok", "format": "xml", "definition": ORDER_V1},
                 {"subject": "ok", "format": "json", "definition": {"type": "nope"}},
                 {"subject": "ok", "format": "avro", "definition": {"type": "record"}},
                 {"subject": "ok", "format": "protobuf", "definition": "message {"},
                 {"subject": "ok", "format": "json", "definition": ORDER_V1,
                  "compatibility": "SIDEWAYS"},
                 {"subject": "ok", "format": "json"}):
        assert_error(tenant.admin.post("/schemas", body), 422, "VALIDATION_ERROR")


def test_roles_only_admins_register_everyone_reads(tenant):
    name = subject()
    created = register(tenant.admin, name, ORDER_V1).json
    for role in ("producer", "consumer"):
        caller = tenant.key(role)
        assert_error(register(caller, subject(), ORDER_V1), 403, "FORBIDDEN")
        assert caller.get(f"/schemas/{name}/versions/latest").status_code == 200
        assert caller.get(f"/schemas/ids/{created['id']}").status_code == 200
        assert caller.get(f"/schemas/{name}/versions").status_code == 200
        assert caller.get("/schemas").status_code == 200


def test_other_tenants_subjects_and_ids_are_404(tenant, other_tenant):
    name = subject()
    created = register(tenant.admin, name, ORDER_V1).json
    other = other_tenant.admin
    assert_error(other.get(f"/schemas/{name}/versions"), 404, "NOT_FOUND")
    assert_error(other.get(f"/schemas/{name}/versions/1"), 404, "NOT_FOUND")
    assert_error(other.get(f"/schemas/{name}/versions/latest"), 404, "NOT_FOUND")
    assert_error(other.get(f"/schemas/ids/{created['id']}"), 404, "NOT_FOUND")
    assert other.get("/schemas").json["items"] == []
    # the same subject name is independent per tenant
    assert register(other, name, ORDER_V2).json["version"] == 1


def test_unknown_versions_are_404(tenant):
    name = subject()
    register(tenant.admin, name, ORDER_V1)
    for version in ("2", "0", "-1", "abc", "99999999999"):
        assert_error(tenant.admin.get(f"/schemas/{name}/versions/{version}"), 404, "NOT_FOUND")
    assert_error(tenant.admin.get("/schemas/nothing-here/versions"), 404, "NOT_FOUND")
    assert_error(tenant.admin.get("/schemas/ids/nothing"), 404, "NOT_FOUND")


def test_list_subjects_with_latest_version_paginated(tenant):
    names = sorted(subject() for _ in range(3))
    for name in names:
        register(tenant.admin, name, ORDER_V1)
    register(tenant.admin, names[0], ORDER_V2)
    page = tenant.admin.get("/schemas?limit=2").json
    assert [(i["subject"], i["version"]) for i in page["items"]] == [(names[0], 2), (names[1], 1)]
    rest = tenant.admin.get(f"/schemas?limit=2&cursor={page['next_cursor']}").json
    assert [i["subject"] for i in rest["items"]] == [names[2]] and rest["next_cursor"] is None


# --- topics bound to a schema -----------------------------------------------------------------


def test_topic_subject_must_exist(tenant, other_tenant):
    name = subject()
    register(other_tenant.admin, name, ORDER_V1)
    for reference in (name, f"{name}:1", "bad name", f"{name}:x"):
        response = tenant.admin.post("/queues", {"name": f"q-{uuid.uuid4().hex[:6]}",
                                                 "schema_subject": reference})
        assert "schema_subject" in assert_error(response, 422, "VALIDATION_ERROR")
    register(tenant.admin, name, ORDER_V1)
    queue = tenant.create_queue(schema_subject=f"{name}:1")
    assert queue["schema_subject"] == f"{name}:1"
    update = tenant.admin.put(f"/queues/{queue['name']}", {"schema_subject": f"{name}:7"})
    assert_error(update, 422, "VALIDATION_ERROR")


def test_publish_single_is_validated_against_the_latest_version(tenant):
    name = subject()
    register(tenant.admin, name, ORDER_V1)
    queue = tenant.create_queue(schema_subject=name)
    ok = tenant.admin.post("/publish", {"topic": queue["name"], "payload": {"id": "a"}})
    assert ok.status_code == 201, ok.json
    response = tenant.admin.post("/publish", {"topic": queue["name"], "payload": {"id": 5}})
    details = assert_error(response, 422, "SCHEMA_VALIDATION_ERROR")
    assert "/id" in response.json["error"]["message"] and "/id" in details["payload"][0]
    # a new latest version applies from the next publish on
    register(tenant.admin, name, {**ORDER_V2, "properties": {
        "id": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}}})
    bad_qty = tenant.admin.post(f"/topics/{queue['name']}/publish",
                                {"payload": {"id": "a", "qty": 0}})
    assert_error(bad_qty, 422, "SCHEMA_VALIDATION_ERROR")


def test_publish_batch_names_the_failing_index_and_pinned_version(tenant):
    name = subject()
    register(tenant.admin, name, ORDER_V1)
    strict = {**ORDER_V2, "required": ["id", "qty"]}
    register(tenant.admin, name, strict, compatibility="NONE")
    pinned_v1 = tenant.create_queue(schema_subject=f"{name}:1")
    pinned_v2 = tenant.create_queue(schema_subject=f"{name}:2")
    messages = [{"payload": {"id": "a"}}, {"payload": {"id": "b"}}]
    assert tenant.admin.post("/publish/batch", {"topic": pinned_v1["name"],
                                                "messages": messages}).status_code == 201
    response = tenant.admin.post("/publish/batch", {"topic": pinned_v2["name"], "messages": [
        {"payload": {"id": "a", "qty": 1}}, {"payload": {"id": "b"}}]})
    details = assert_error(response, 422, "SCHEMA_VALIDATION_ERROR")
    assert list(details["messages"]) == ["1"]
    assert "qty" in details["messages"]["1"]["payload"][0]


def test_inline_schema_definition_is_validated_on_publish(tenant):
    queue = tenant.create_queue(schema_definition=ORDER_V1)
    response = tenant.admin.post("/publish", {"topic": queue["name"], "payload": {"x": 1}})
    assert_error(response, 422, "SCHEMA_VALIDATION_ERROR")


def test_avro_subject_validates_payloads(tenant):
    name = subject()
    register(tenant.admin, name, AVRO_V1, "avro")
    queue = tenant.create_queue(schema_subject=name)
    good = tenant.admin.post("/publish", {"topic": queue["name"], "payload": {"id": "a"}})
    assert good.status_code == 201, good.json
    bad = tenant.admin.post("/publish", {"topic": queue["name"], "payload": {"id": 3}})
    assert "id" in assert_error(bad, 422, "SCHEMA_VALIDATION_ERROR")["payload"][0]


def test_delayed_publish_is_validated(tenant):
    name = subject()
    register(tenant.admin, name, ORDER_V1)
    queue = tenant.create_queue(schema_subject=name)
    response = tenant.admin.post("/publish/delayed", {"topic": queue["name"],
                                                      "payload": {"id": 1}, "delay_ms": 60_000})
    assert_error(response, 422, "SCHEMA_VALIDATION_ERROR")
    recurring = tenant.admin.post("/publish/scheduled", {"topic": queue["name"],
                                                         "payload": {"id": 1}, "cron": "0 * * * *"})
    assert_error(recurring, 422, "SCHEMA_VALIDATION_ERROR")
    fine = tenant.admin.post("/publish/delayed", {"topic": queue["name"],
                                                  "payload": {"id": "x"}, "delay_ms": 60_000})
    assert fine.status_code == 202, fine.json


# --- fuzz -------------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12)
BODIES = st.fixed_dictionaries({}, optional={
    "subject": st.text(max_size=30) | st.sampled_from(["fz", "fz.a", "fz-b"]) | JSON_VALUES,
    "format": st.sampled_from(["json", "avro", "protobuf", "xml"]) | JSON_VALUES,
    "definition": JSON_VALUES | st.sampled_from([ORDER_V1, AVRO_V1, PROTO, "message {"]),
    "compatibility": st.sampled_from(["BACKWARD", "FORWARD", "FULL", "NONE", "x"]),
}) | JSON_VALUES


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=BODIES)
def test_fuzzed_schema_bodies_never_answer_5xx(tenant, body):
    response = tenant.admin.post("/schemas", body)
    assert response.status_code < 500, (body, response.get_data(as_text=True))
