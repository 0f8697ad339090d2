"""The function handler by direct call: the allow-list (at subscription time and again at
delivery), sync and async callables, return values recorded, failures retried."""

from __future__ import annotations

import dataclasses
import json

import pytest

from handlers.base import EXCERPT_BYTES, PermanentFailure, RetryableFailure
from handlers.function import FunctionHandler, module_allowed, reference_problem, resolve
from mq.settings import Settings
from tests.handlers import sample_functions
from tests.handlers.helpers import make_delivery

MODULE = "tests.handlers.sample_functions"
ALLOWED = Settings(mq_function_modules=(MODULE, "examples"), processing_timeout_ms=300)


@pytest.fixture
def handler():
    handler = FunctionHandler(ALLOWED)
    yield handler
    handler.close()


def call(handler: FunctionHandler, name: str, payload=None, headers=None):
    return handler.deliver({"type": "function", "function": f"{MODULE}:{name}"},
                           make_delivery(payload, headers=headers))


@pytest.mark.parametrize(("module", "allowed", "expected"), [
    ("examples.orders", ("examples",), True),
    ("examples", ("examples",), True),
    ("examples.orders", ("examples.orders",), True),
    ("examples.orders_extra", ("examples.orders",), False),
    ("examplesx.orders", ("examples",), False),
    ("examples", ("examples.orders",), False),
    ("os", ("examples",), False),
    ("os", (), False),
])
def test_module_allow_list(module, allowed, expected):
    assert module_allowed(module, allowed) is expected


def test_an_allowed_function_is_called_with_payload_and_headers(handler):
    sample_functions.CALLS.clear()
    result = call(handler, "remember", {"order_id": "o-1"}, {"source": "shop"})
    assert sample_functions.CALLS == [({"order_id": "o-1"}, {"source": "shop"})]
    assert json.loads(result.excerpt) == {"seen": {"order_id": "o-1"}, "source": "shop"}
    assert result.status is None


def test_an_async_function_is_awaited(handler):
    sample_functions.CALLS.clear()
    first = call(handler, "remember_later", 1)
    second = call(handler, "remember_later", 2)  # the thread's loop is reused
    assert [payload for payload, _ in sample_functions.CALLS] == [1, 2]
    assert json.loads(first.excerpt) == ["async", 1]
    assert json.loads(second.excerpt) == ["async", 2]


def test_an_async_function_past_the_processing_timeout_is_retried(handler):
    with pytest.raises(RetryableFailure, match="timed out"):
        call(handler, "sleep_forever")


def test_an_exception_is_a_retryable_failure(handler):
    with pytest.raises(RetryableFailure, match="RuntimeError: the function failed"):
        call(handler, "explode", {"a": 1})


def test_a_function_may_fail_permanently_on_purpose(handler):
    with pytest.raises(PermanentFailure, match="can never be processed"):
        call(handler, "refuse")


def test_return_values_are_recorded_bounded(handler):
    assert call(handler, "returns_nothing").excerpt is None
    assert call(handler, "returns_object").excerpt.startswith("<object object at")
    huge = call(handler, "returns_huge").excerpt
    assert huge.startswith('"xxx') and len(huge.encode()) <= EXCERPT_BYTES


def test_the_function_gets_a_copy_of_the_headers(handler):
    delivery = make_delivery({}, headers={"source": "shop"})
    handler.deliver({"type": "function", "function": f"{MODULE}:mutate_headers"}, delivery)
    assert delivery.headers == {"source": "shop"}


def test_a_module_no_longer_allowed_is_refused_at_delivery():
    narrowed = FunctionHandler(dataclasses.replace(ALLOWED, mq_function_modules=("examples",)))
    with pytest.raises(PermanentFailure, match="not in the allowed function modules"):
        call(narrowed, "remember")
    narrowed.close()


def test_the_example_order_functions(handler):
    config = {"type": "function", "function": "examples.orders:record_order"}
    result = handler.deliver(config, make_delivery(
        {"order_id": "o-9", "items": [{"price": 2.5, "quantity": 2}, {"price": 1}]},
        headers={"source": "shop"}))
    assert json.loads(result.excerpt) == {"order_id": "o-9", "total": 6.0, "source": "shop"}
    with pytest.raises(RetryableFailure, match="InvalidOrder"):
        handler.deliver(config, make_delivery({"items": []}))
    shipped = handler.deliver({"type": "function", "function": "examples.orders:notify_shipping"},
                              make_delivery({"order_id": "o-9", "region": "eu"}))
    assert json.loads(shipped.excerpt) == {"shipment_for": "o-9", "region": "eu"}


@pytest.mark.parametrize(("reference", "fragment"), [
    ("os:system", "not in the allowed function modules"),
    ("subprocess:run", "not in the allowed function modules"),
    ("examplesx.orders:record_order", "not in the allowed function modules"),
    (f"{MODULE}:missing", "has no attribute 'missing'"),
    (f"{MODULE}:NOT_CALLABLE", "is not callable"),
    (f"{MODULE}:dumps", "comes from module 'json'"),
    (f"{MODULE}:_private", "expected 'package.module:callable'"),
    (f"{MODULE}:remember.__globals__", "expected 'package.module:callable'"),
    (f"{MODULE}.remember", "expected 'package.module:callable'"),
    ("examples.nope:record_order", "cannot be imported: ModuleNotFoundError"),
    ("examples.orders:record_order; import os", "expected 'package.module:callable'"),
    ("", "expected"),
    (None, "expected"),
])
def test_unusable_references_are_refused(reference, fragment):
    assert fragment in reference_problem(reference, ALLOWED)


def test_nothing_is_allowed_by_default():
    assert "not in the allowed" in reference_problem("examples.orders:record_order", Settings())


def test_a_valid_reference_resolves():
    assert reference_problem(f"{MODULE}:remember", ALLOWED) is None
    assert resolve(f"{MODULE}:remember", ALLOWED.mq_function_modules) is sample_functions.remember
