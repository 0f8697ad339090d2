"""Compatibility rules per format and mode (pure functions, no service needed)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from formats import protobuf
from formats.json_schema import SchemaDefinitionError
from formats.schema_registry import check_definition, incompatibilities, payload_checker


def avro(*fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": "record", "name": "Order", "fields": list(fields)}


def obj(properties: dict[str, Any], required: list[str] = (), **extra: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required), **extra}


PROTO_V1 = 'syntax = "proto3";\nmessage Order { string id = 1; int32 qty = 2; }'
PROTO_ADDED = 'syntax = "proto3";\nmessage Order { string id = 1; int32 qty = 2; string note = 3; }'
PROTO_RETYPED = 'syntax = "proto3";\nmessage Order { string id = 1; string qty = 2; }'


def proto(order_fields: str, first: str = "Order") -> str:
    """A .proto whose first message is `first`, with a nested Item and a top-level enum."""
    return ('syntax = "proto3";\npackage shop;\n'
            f"message {first} {{\n  {order_fields}\n"
            "  message Item { string sku = 1; int32 qty = 2; }\n}\n"
            "enum Status { NEW = 0; PAID = 1; }\n")


PROTO2_ID = 'syntax = "proto2";\nmessage Order { optional string id = 1; }'
PROTO2_REQUIRED = PROTO2_ID.replace("id = 1;", "id = 1; required int32 n = 2;")
ORDER = proto("string id = 1; repeated Item items = 2; Status status = 3;")

ID = {"name": "id", "type": "string"}
QTY_INT = {"name": "qty", "type": "int"}
QTY_LONG = {"name": "qty", "type": "long"}
NOTE = {"name": "note", "type": "string"}
NOTE_DEFAULT = {"name": "note", "type": "string", "default": ""}

# (format, mode, previous, new, compatible?)
CASES = [
    # Avro: a field added without a default breaks BACKWARD (new reader lacks data for it)
    ("avro", "BACKWARD", avro(ID), avro(ID, NOTE), False),
    ("avro", "BACKWARD", avro(ID), avro(ID, NOTE_DEFAULT), True),
    ("avro", "BACKWARD", avro(ID, QTY_INT), avro(ID, QTY_LONG), True),  # int promotes to long
    ("avro", "BACKWARD", avro(ID, QTY_LONG), avro(ID, QTY_INT), False),
    # FORWARD: the old reader must read new data; removing a field it needs without default
    ("avro", "FORWARD", avro(ID, NOTE), avro(ID), False),
    ("avro", "FORWARD", avro(ID, NOTE_DEFAULT), avro(ID), True),
    ("avro", "FORWARD", avro(ID), avro(ID, NOTE), True),
    ("avro", "FORWARD", avro(ID, QTY_INT), avro(ID, QTY_LONG), False),
    ("avro", "FULL", avro(ID), avro(ID, NOTE_DEFAULT), True),
    ("avro", "FULL", avro(ID), avro(ID, NOTE), False),
    ("avro", "FULL", avro(ID, QTY_INT), avro(ID, QTY_LONG), False),
    ("avro", "NONE", avro(ID), {"type": "array", "items": "int"}, True),
    # JSON Schema
    ("json", "BACKWARD", obj({"a": {"type": "string"}}),
     obj({"a": {"type": "string"}, "b": {"type": "integer"}}, ["b"]), False),
    ("json", "BACKWARD", obj({"a": {"type": "string"}}),
     obj({"a": {"type": "string"}, "b": {"type": "integer"}}), True),
    ("json", "BACKWARD", obj({"a": {"type": "integer"}}), obj({"a": {"type": "number"}}), True),
    ("json", "BACKWARD", obj({"a": {"type": "number"}}), obj({"a": {"type": "integer"}}), False),
    ("json", "FORWARD", obj({"a": {"type": "string"}}, ["a"]), obj({"a": {"type": "string"}}),
     False),
    ("json", "FORWARD", obj({"a": {"type": "string"}}), obj({"a": {"type": "string"}}, ["a"]),
     True),
    ("json", "FORWARD", obj({"a": {"type": "string"}}, additionalProperties=False),
     obj({"a": {"type": "string"}, "b": {"type": "string"}}), False),
    ("json", "FULL", obj({"a": {"type": "string"}}),
     obj({"a": {"type": "string"}, "b": {"type": "string"}}), True),
    ("json", "FULL", obj({"a": {"type": "string"}}, ["a"]), obj({"a": {"type": "string"}}),
     False),
    ("json", "NONE", obj({"a": {"type": "string"}}), obj({"a": {"type": "integer"}}, ["a"]),
     True),
    # Protobuf: field numbers keep their types; added/removed fields are fine
    ("protobuf", "BACKWARD", PROTO_V1, PROTO_ADDED, True),
    ("protobuf", "BACKWARD", PROTO_V1, PROTO_RETYPED, False),
    ("protobuf", "FORWARD", PROTO_ADDED, PROTO_V1, True),
    ("protobuf", "FORWARD", PROTO_V1, PROTO_RETYPED, False),
    ("protobuf", "FULL", PROTO_V1, PROTO_ADDED, True),
    ("protobuf", "FULL", PROTO_V1, PROTO_RETYPED, False),
    ("protobuf", "NONE", PROTO_V1, PROTO_RETYPED, True),
    # Wire-compatible groups: int32 ↔ int64 ↔ uint64 ↔ bool ↔ enum, string ↔ bytes, …
    ("protobuf", "FULL", PROTO_V1, PROTO_V1.replace("int32 qty", "int64 qty"), True),
    ("protobuf", "FULL", PROTO_V1, PROTO_V1.replace("string id", "bytes id"), True),
    ("protobuf", "FULL", ORDER, ORDER.replace("Status status", "int32 status"), True),
    ("protobuf", "BACKWARD", PROTO_V1, PROTO_V1.replace("int32 qty", "sint32 qty"), False),
    ("protobuf", "BACKWARD", PROTO_V1, PROTO_V1.replace("int32 qty", "fixed32 qty"), False),
    ("protobuf", "BACKWARD", PROTO_V1, PROTO_V1.replace("int32 qty", "double qty"), False),
    # Renamed fields keep their numbers: the wire does not see names
    ("protobuf", "FULL", PROTO_V1, PROTO_V1.replace("qty", "quantity"), True),
    # Nested messages are compared too, and message-typed fields keep their type
    ("protobuf", "BACKWARD", ORDER, ORDER.replace("int32 qty = 2", "string qty = 2"), False),
    ("protobuf", "BACKWARD", ORDER, ORDER.replace("int32 qty = 2", "int32 qty = 3"), True),
    ("protobuf", "BACKWARD", ORDER, ORDER.replace("repeated Item items", "repeated Status items"),
     False),
    ("protobuf", "BACKWARD", ORDER, ORDER.replace("repeated Item", "Item"), False),
    # Map values are the value field of an entry message
    ("protobuf", "BACKWARD", proto("map<string, int32> counts = 1;"),
     proto("map<string, string> counts = 1;"), False),
    ("protobuf", "BACKWARD", proto("map<string, int32> counts = 1;"),
     proto("map<string, int64> counts = 1;"), True),
    # The payload type is the first message: it may not become another one
    ("protobuf", "BACKWARD", ORDER, proto("string id = 1;", first="Invoice"), False),
    ("protobuf", "NONE", ORDER, proto("string id = 1;", first="Invoice"), True),
    # proto2: a reader's required field must be written
    ("protobuf", "BACKWARD", PROTO2_ID, PROTO2_REQUIRED, False),
    ("protobuf", "FORWARD", PROTO2_ID, PROTO2_REQUIRED, True),
]


@pytest.mark.parametrize(("fmt", "mode", "previous", "new", "compatible"), CASES)
def test_compatibility_rules(fmt, mode, previous, new, compatible):
    problems = incompatibilities(fmt, mode, previous, new)
    assert (problems == []) is compatible, problems
    if not compatible:
        assert all(p.startswith(("BACKWARD:", "FORWARD:")) for p in problems)


def test_avro_recursive_types_and_unions_resolve():
    node = {"type": "record", "name": "Node", "fields": [
        {"name": "value", "type": ["null", "int"]},
        {"name": "next", "type": ["null", "Node"], "default": None}]}
    widened = {"type": "record", "name": "Node", "fields": [
        {"name": "value", "type": ["null", "long"]},
        {"name": "next", "type": ["null", "Node"], "default": None}]}
    assert incompatibilities("avro", "BACKWARD", node, widened) == []
    assert incompatibilities("avro", "FORWARD", node, widened) != []


@pytest.mark.parametrize(("fmt", "definition"), [
    ("json", {"type": "nope"}),
    ("json", [1, 2]),
    ("avro", {"type": "record", "name": "R"}),
    ("avro", {"type": "unknown_type"}),
    ("protobuf", "message {"),
    ("protobuf", {"not": "text"}),
    ("protobuf", 'syntax = "proto3";'),
    ("protobuf", 'syntax = "proto3";\nmessage A { Missing m = 1; }'),
    ("protobuf", 'syntax = "proto3";\nmessage A { int32 a = 1; string b = 1; }'),
    ("protobuf", 'syntax = "proto3";\nimport "other.proto";\nmessage A { int32 a = 1; }'),
    ("protobuf", 'syntax = "proto3";\nimport "../../etc/passwd";\nmessage A { int32 a = 1; }'),
    ("protobuf", "x" * 200_001),
])
def test_invalid_definitions_are_refused(fmt, definition):
    with pytest.raises(SchemaDefinitionError):
        check_definition(fmt, definition)


def test_payload_checkers_name_the_first_error_path():
    json_check = payload_checker("json", obj({"a": {"type": "integer"}}, ["a"]))
    assert json_check({"a": 1}) is None
    assert json_check({"a": "x"}).path == "/a"
    avro_check = payload_checker("avro", avro(ID, QTY_INT))
    assert avro_check({"id": "x", "qty": 1}) is None
    assert "qty" in avro_check({"id": "x", "qty": "many"}).path
    proto_check = payload_checker("protobuf", PROTO_V1)
    assert proto_check({"id": "x", "qty": 2}) is None
    assert proto_check({"id": "x", "color": "red"}).path == "/color"
    assert proto_check([1]).path == "/"


@pytest.mark.parametrize(("payload", "path"), [
    ({"id": "o-1", "items": [{"sku": "a", "qty": 2}], "status": "PAID"}, None),
    ({"id": "o-1", "items": [{"sku": "a", "qty": 2}], "status": 1}, None),  # enum by number
    ({"id": 7}, "/id"),
    ({"status": "LOST"}, "/status"),
    ({"items": [{"sku": "a"}, {"sku": "b", "qty": "many"}]}, "/items/1/qty"),
    ({"items": [{"sku": "a"}, {"colour": "red"}]}, "/items/1/colour"),
    ({"items": {"sku": "a"}}, "/items"),
    ({"items": [{"sku": "a"}, 5]}, "/items/1"),
    ({"id": "o-1", "note": "x"}, "/note"),
    ("an order", "/"),
])
def test_protobuf_checker_names_the_first_bad_field(payload, path):
    problem = payload_checker("protobuf", ORDER)(payload)
    assert (problem.path if problem else None) == path
    if problem is not None:
        assert problem.path in problem.message


def test_protobuf_errors_name_the_line():
    with pytest.raises(SchemaDefinitionError, match=r"line 3:\d+: .*Missing.* is not defined"):
        check_definition("protobuf", 'syntax = "proto3";\n\nmessage A { Missing m = 1; }')


def test_protobuf_compatibility_names_the_field():
    [problem] = incompatibilities("protobuf", "BACKWARD", ORDER,
                                  ORDER.replace("int32 qty = 2", "string qty = 2"))
    assert problem == "BACKWARD: shop.Order.Item field 2 (qty): type int32 cannot be read as string"


def test_schemas_too_deep_to_compare_are_refused_not_crashed():
    deep: dict[str, Any] = {"type": "object"}
    for _ in range(3000):
        deep = {"type": "object", "properties": {"a": deep}}
    with pytest.raises(SchemaDefinitionError):
        incompatibilities("json", "FULL", deep, deep)


ORDER_FIELD_NAMES = st.sampled_from(["id", "items", "status", "sku", "qty", "x"])
ORDER_LIKE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(max_size=8) | st.sampled_from(["PAID", "NEW", "1e3", "-0"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(ORDER_FIELD_NAMES, inner,
                                                                max_size=4),
    max_leaves=12)


@given(ORDER_LIKE)
@hypothesis_settings(max_examples=300, deadline=None)
def test_protobuf_checker_and_encoder_never_raise_anything_else(payload):
    """Any JSON value: the checker answers a problem or None, and the encoder agrees with it
    (encodes exactly what the checker accepts)."""
    schema = protobuf.compiled(ORDER)
    problem = payload_checker("protobuf", ORDER)(payload)
    try:
        protobuf.encode(schema, payload)
    except protobuf.ProtoPayloadError as exc:
        assert problem is not None and exc.path == problem.path
    else:
        assert problem is None
