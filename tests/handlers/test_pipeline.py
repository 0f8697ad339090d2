"""The steps before every handler: filter, schema check, transform, and the checks that
refuse unusable schemas and expressions when a subscription is saved."""

from __future__ import annotations

import pytest

from formats.json_schema import SchemaDefinitionError, checked_schema, payload_problem
from handlers.base import PermanentFailure
from handlers.pipeline import FILTERED, Filtered, apply
from handlers.transform import TransformError, compile_expression, transform
from tests.handlers.helpers import make_delivery

ORDER_SCHEMA = {
    "type": "object",
    "required": ["order_id", "amount"],
    "properties": {"order_id": {"type": "string"}, "amount": {"type": "number", "minimum": 0}},
}


def test_no_steps_hand_the_delivery_over_unchanged():
    delivery = make_delivery({"a": 1})
    assert apply({"type": "http"}, None, delivery) is delivery
    assert apply({"type": "http", "schema": None, "transform": None}, {}, delivery) is delivery


def test_a_non_matching_message_is_filtered():
    policy = {"payload.amount": [{"numeric": [">", 100]}]}
    assert apply({"type": "http"}, policy, make_delivery({"amount": 5})) is FILTERED
    assert isinstance(FILTERED, Filtered)
    passed = apply({"type": "http"}, policy, make_delivery({"amount": 500}))
    assert passed.payload == {"amount": 500}


def test_a_payload_matching_the_schema_passes():
    delivery = make_delivery({"order_id": "o-1", "amount": 3})
    assert apply({"type": "http", "schema": ORDER_SCHEMA}, None, delivery) is delivery


@pytest.mark.parametrize("payload", [
    {"order_id": "o-1"}, {"order_id": 1, "amount": 3}, {"order_id": "o", "amount": -1},
    "text", None, [],
])
def test_a_payload_failing_the_schema_is_permanent_with_reason_schema(payload):
    with pytest.raises(PermanentFailure) as caught:
        apply({"type": "http", "schema": ORDER_SCHEMA}, None, make_delivery(payload))
    assert caught.value.reason == "schema"
    assert "does not match the schema" in str(caught.value)


def test_the_filter_runs_before_the_schema():
    """A message the subscription does not want is skipped, not dead-lettered."""
    config = {"type": "http", "schema": ORDER_SCHEMA}
    outcome = apply(config, {"headers.type": ["order"]}, make_delivery("bad", headers={}))
    assert outcome is FILTERED


def test_formats_are_checked():
    schema = {"type": "object", "properties": {"email": {"type": "string", "format": "email"}}}
    assert payload_problem(schema, {"email": "a@example.com"}) is None
    assert "email" in payload_problem(schema, {"email": "not an address"})


def test_the_transform_result_is_the_new_payload():
    delivery = make_delivery({"order": {"id": "o-1", "lines": [{"sku": "A"}, {"sku": "B"}]}},
                             headers={"source": "shop"}, key="cust-7")
    config = {"type": "function",
              "transform": "{id: payload.order.id, skus: payload.order.lines[].sku,"
                           " source: headers.source, customer: key}"}
    transformed = apply(config, None, delivery)
    assert transformed.payload == {"id": "o-1", "skus": ["A", "B"], "source": "shop",
                                   "customer": "cust-7"}
    assert transformed.message_id == delivery.message_id
    assert delivery.payload["order"]["id"] == "o-1"  # the original is untouched


def test_the_schema_is_checked_on_the_payload_before_the_transform():
    config = {"type": "http", "schema": ORDER_SCHEMA, "transform": "payload.amount"}
    assert apply(config, None, make_delivery({"order_id": "o", "amount": 4})).payload == 4


def test_a_transform_failing_on_the_data_is_permanent():
    with pytest.raises(PermanentFailure) as caught:
        apply({"type": "http", "transform": "sum(payload)"}, None, make_delivery(["a", "b"]))
    assert caught.value.reason == "permanent"
    assert "transform failed" in str(caught.value)


def test_a_transform_of_missing_fields_gives_null():
    assert apply({"type": "http", "transform": "payload.nope"}, None,
                 make_delivery({})).payload is None


@pytest.mark.parametrize("expression", ["payload.[", "", "   ", "payload[?", "foo(", "a" * 10_001])
def test_invalid_expressions_are_refused(expression):
    with pytest.raises(TransformError):
        compile_expression(expression)


def test_valid_expressions_compile():
    assert transform("payload.a", {"payload": {"a": 2}}) == 2
    assert compile_expression("length(payload.items)") is compile_expression(
        "length(payload.items)")


@pytest.mark.parametrize(("schema", "fragment"), [
    ({"type": "nonsense"}, "not a JSON Schema"),
    ({"type": "object", "required": "order_id"}, "not a JSON Schema"),
    ({"minimum": "0"}, "not a JSON Schema"),
    ({"$schema": 5}, "$schema must be"),
    ({"$ref": "https://schemas.example.com/order.json"}, "only references inside"),
    ({"properties": {"a": {"$ref": "other.json#/a"}}}, "only references inside"),
    ("string", "a schema is"),
])
def test_unusable_schemas_are_refused(schema, fragment):
    with pytest.raises(SchemaDefinitionError) as caught:
        checked_schema(schema)
    assert fragment in str(caught.value)


def test_local_references_are_fine():
    schema = {"$defs": {"id": {"type": "string"}},
              "properties": {"order_id": {"$ref": "#/$defs/id"}}}
    assert checked_schema(schema) is schema
    assert payload_problem(schema, {"order_id": 5}) is not None
    assert payload_problem(schema, {"order_id": "o"}) is None
