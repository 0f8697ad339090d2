"""The filter policy: every operator with matching and non-matching messages, and the
checks that refuse invalid policies."""

from __future__ import annotations

from typing import Any

import pytest

from handlers.filters import FilterPolicyError, compile_policy


def doc(payload: Any = None, headers: dict[str, str] | None = None,
        key: str | None = None) -> dict[str, Any]:
    return {"payload": payload, "headers": headers or {}, "key": key}


def matches(policy: dict[str, Any], document: dict[str, Any]) -> bool:
    return compile_policy(policy).matches(document)


@pytest.mark.parametrize(("condition", "value", "expected"), [
    ("eu", "eu", True),
    ("eu", "EU", False),
    ("eu", "eu-west", False),
    (5, 5, True),
    (5, 5.0, True),
    (5, 6, False),
    (5, "5", False),
    (1, True, False),
    (True, True, True),
    (True, 1, False),
    (False, False, True),
    (False, None, False),
    (None, None, True),
    (None, 0, False),
    (None, "", False),
])
def test_exact_values(condition, value, expected):
    assert matches({"payload.field": [condition]}, doc({"field": value})) is expected


def test_any_entry_of_the_list_may_match():
    policy = {"payload.region": ["eu", "us", 7]}
    assert matches(policy, doc({"region": "us"}))
    assert matches(policy, doc({"region": 7}))
    assert not matches(policy, doc({"region": "apac"}))


def test_a_single_condition_without_a_list():
    assert matches({"payload.region": "eu"}, doc({"region": "eu"}))
    assert not matches({"payload.region": "eu"}, doc({"region": "us"}))


@pytest.mark.parametrize(("value", "expected"), [
    ("eu-west-1", True), ("eu-", True), ("us-east", False), ("EU-west", False),
    ("eu", False), (5, False), (None, False), (["us-1", "eu-2"], True), (["us-1"], False),
])
def test_prefix(value, expected):
    assert matches({"payload.region": [{"prefix": "eu-"}]}, doc({"region": value})) is expected


@pytest.mark.parametrize(("comparison", "value", "expected"), [
    ([">", 100], 101, True),
    ([">", 100], 100, False),
    ([">=", 100], 100, True),
    ([">=", 100], 99.99, False),
    (["<", 0], -1, True),
    (["<", 0], 0, False),
    (["<=", 0], 0, True),
    (["<=", 0], 0.5, False),
    (["=", 3.5], 3.5, True),
    (["=", 3], 3.0, True),
    (["=", 3], 4, False),
    ([">", 0, "<=", 100], 100, True),
    ([">", 0, "<=", 100], 0, False),
    ([">", 0, "<=", 100], 100.01, False),
    (["<", 10, ">=", 5], 5, True),
    (["<", 10, ">=", 5], 10, False),
    ([">", 100], "150", False),
    ([">", 0], True, False),
    ([">", 0], None, False),
    ([">", 100], 10**30, True),
    (["<", 1e308], 10**400, False),
])
def test_numeric(comparison, value, expected):
    policy = {"payload.amount": [{"numeric": comparison}]}
    assert matches(policy, doc({"amount": value})) is expected


@pytest.mark.parametrize(("payload", "present"), [
    ({"coupon": "X"}, True),
    ({"coupon": None}, True),
    ({"coupon": []}, True),
    ({"coupon": {}}, True),
    ({}, False),
    ({"other": 1}, False),
    ("not an object", False),
    (None, False),
])
def test_exists(payload, present):
    assert matches({"payload.coupon": [{"exists": True}]}, doc(payload)) is present
    assert matches({"payload.coupon": [{"exists": False}]}, doc(payload)) is not present


@pytest.mark.parametrize(("condition", "value", "expected"), [
    (["test"], "live", True),
    (["test"], "test", False),
    (["test", "staging"], "staging", False),
    ("test", "live", True),
    ("test", "test", False),
    ([0], 1, True),
    ([0], 0.0, False),
    ([True], False, True),
    ([None], None, False),
    (["1"], 1, True),
    ({"prefix": "int-"}, "int-7", False),
    ({"prefix": "int-"}, "ext-7", True),
    ({"prefix": "int-"}, 7, True),
])
def test_anything_but(condition, value, expected):
    policy = {"payload.status": [{"anything-but": condition}]}
    assert matches(policy, doc({"status": value})) is expected


def test_anything_but_needs_the_field():
    assert not matches({"payload.status": [{"anything-but": ["test"]}]}, doc({}))


def test_arrays_match_if_any_element_matches():
    policy = {"payload.tags": ["vip"]}
    assert matches(policy, doc({"tags": ["new", "vip"]}))
    assert not matches(policy, doc({"tags": ["new"]}))
    assert not matches(policy, doc({"tags": []}))


def test_arrays_of_objects_are_looked_through():
    policy = {"payload.items.sku": [{"prefix": "BK-"}]}
    assert matches(policy, doc({"items": [{"sku": "TS-1"}, {"sku": "BK-9"}]}))
    assert not matches(policy, doc({"items": [{"sku": "TS-1"}, {"qty": 2}]}))


def test_a_numeric_segment_indexes_an_array():
    policy = {"payload.items.0.sku": ["A"]}
    assert matches(policy, doc({"items": [{"sku": "A"}, {"sku": "B"}]}))
    assert not matches(policy, doc({"items": [{"sku": "B"}, {"sku": "A"}]}))


def test_nested_paths():
    policy = {"payload.customer.tier": ["gold"]}
    assert matches(policy, doc({"customer": {"tier": "gold"}}))
    assert not matches(policy, doc({"customer": {"tier": "silver"}}))
    assert not matches(policy, doc({"customer": "gold"}))


def test_headers_and_key():
    policy = {"headers.type": ["order.created"], "key": [{"prefix": "cust-"}]}
    assert matches(policy, doc({}, {"type": "order.created"}, "cust-1"))
    assert not matches(policy, doc({}, {"type": "order.updated"}, "cust-1"))
    assert not matches(policy, doc({}, {"type": "order.created"}, "acct-1"))
    assert not matches(policy, doc({}, {"type": "order.created"}, None))


def test_a_header_name_with_dots_is_one_name():
    assert matches({"headers.x.trace.id": ["7"]}, doc({}, {"x.trace.id": "7"}))


def test_a_missing_key_does_not_exist():
    assert matches({"key": [{"exists": False}]}, doc({}, key=None))
    assert not matches({"key": [{"exists": False}]}, doc({}, key="k"))


def test_the_whole_payload_as_a_value():
    assert matches({"payload": ["ping"]}, doc("ping"))
    assert not matches({"payload": ["ping"]}, doc({"payload": "ping"}))


def test_every_key_of_the_policy_must_match():
    policy = {
        "headers.type": ["order.created"],
        "payload.amount": [{"numeric": [">", 100]}],
        "payload.region": [{"prefix": "eu-"}],
        "payload.coupon": [{"exists": False}],
        "payload.status": [{"anything-but": ["test"]}],
    }
    good = {"amount": 150, "region": "eu-west", "status": "live"}
    headers = {"type": "order.created"}
    assert matches(policy, doc(good, headers))
    for change in ({"amount": 50}, {"region": "us-east"}, {"coupon": "X"},
                   {"status": "test"}):
        assert not matches(policy, doc({**good, **change}, headers)), change
    assert not matches(policy, doc(good, {"type": "order.deleted"}))


def test_an_empty_policy_matches_everything():
    assert matches({}, doc({"anything": 1}))


def test_exists_can_be_combined_with_values():
    policy = {"payload.coupon": [{"exists": False}, "WELCOME"]}
    assert matches(policy, doc({}))
    assert matches(policy, doc({"coupon": "WELCOME"}))
    assert not matches(policy, doc({"coupon": "OTHER"}))


@pytest.mark.parametrize(("policy", "fragment"), [
    ([], "must be an object"),
    ({"amount": ["x"]}, "starts with 'payload'"),
    ({"payload..x": ["x"]}, "empty segments"),
    ({"headers": ["x"]}, "name a header"),
    ({"key.x": ["x"]}, "no fields"),
    ({"payload.x": []}, "at least one condition"),
    ({"payload.x": [["nested"]]}, "a condition is"),
    ({"payload.x": [{"suffix": "x"}]}, "unknown operator"),
    ({"payload.x": [{"prefix": "a", "numeric": [">", 1]}]}, "exactly one operator"),
    ({"payload.x": [{"prefix": 5}]}, "'prefix' takes"),
    ({"payload.x": [{"prefix": ""}]}, "'prefix' takes"),
    ({"payload.x": [{"numeric": [">"]}]}, "'numeric' takes"),
    ({"payload.x": [{"numeric": ">"}]}, "'numeric' takes"),
    ({"payload.x": [{"numeric": ["~", 1]}]}, "operators are"),
    ({"payload.x": [{"numeric": [">", "1"]}]}, "finite numbers"),
    ({"payload.x": [{"numeric": [">", True]}]}, "finite numbers"),
    ({"payload.x": [{"numeric": [">", 1, ">", 2]}]}, "one lower bound"),
    ({"payload.x": [{"numeric": ["=", 1, "<", 2]}]}, "one lower bound"),
    ({"payload.x": [{"numeric": [">", 10, "<", 2]}]}, "range is empty"),
    ({"payload.x": [{"exists": "yes"}]}, "true or false"),
    ({"payload.x": [{"anything-but": []}]}, "at least one value"),
    ({"payload.x": [{"anything-but": {"suffix": "a"}}]}, "'anything-but' takes"),
    ({"payload.x": [{"anything-but": [{"a": 1}]}]}, "a condition is"),
    ({"payload.x": [float("nan")]}, "finite"),
    ({f"payload.f{i}": ["x"] for i in range(51)}, "at most 50 paths"),
])
def test_invalid_policies_are_refused_with_a_reason(policy, fragment):
    with pytest.raises(FilterPolicyError) as caught:
        compile_policy(policy)
    messages = [message for found in caught.value.problems.values() for message in found]
    assert any(fragment in message for message in messages), caught.value.problems


def test_every_bad_path_is_reported():
    with pytest.raises(FilterPolicyError) as caught:
        compile_policy({"payload.ok": ["x"], "bad": ["x"], "payload.y": [{"nope": 1}]})
    assert set(caught.value.problems) == {"bad", "payload.y"}
