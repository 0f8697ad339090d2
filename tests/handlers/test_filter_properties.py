"""Properties of the filter: it never raises on any JSON message, whatever the (valid)
policy, and checking an arbitrary JSON value as a policy either compiles or is refused
with `FilterPolicyError`, never anything else."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from handlers.filters import FilterPolicyError, Policy, compile_policy
from handlers.pipeline import FILTERED, apply
from tests.handlers.helpers import make_delivery

SEGMENTS = st.sampled_from(["a", "b", "items", "0", "1", "tier", "amount", "x.y"])
SCALARS = (st.none() | st.booleans() | st.integers() | st.text(max_size=8)
           | st.floats(allow_nan=False, allow_infinity=False))
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["a", "b", "items", "tier", "amount", "0"]) | st.text(
        max_size=3), children, max_size=4),
    max_leaves=25,
)
HEADERS = st.dictionaries(st.sampled_from(["a", "type", "x.y"]) | st.text(max_size=3),
                          st.text(max_size=6), max_size=3)
NUMBERS = st.integers(-10**6, 10**6) | st.floats(-1e6, 1e6, allow_nan=False)


@st.composite
def paths(draw: st.DrawFn) -> str:
    root = draw(st.sampled_from(["payload", "headers", "key"]))
    if root == "key":
        return root
    if root == "headers":
        return "headers." + draw(st.sampled_from(["a", "type", "x.y"]))
    segments = draw(st.lists(SEGMENTS.filter(lambda s: "." not in s), max_size=3))
    return ".".join([root, *segments])


@st.composite
def numeric(draw: st.DrawFn) -> dict[str, list[Any]]:
    if draw(st.booleans()):
        return {"numeric": [draw(st.sampled_from(["=", "<", "<=", ">", ">="])), draw(NUMBERS)]}
    low, high = sorted([draw(NUMBERS), draw(NUMBERS)])
    return {"numeric": [draw(st.sampled_from([">", ">="])), low,
                        draw(st.sampled_from(["<", "<="])), high]}


EXACT = st.none() | st.booleans() | NUMBERS | st.text(max_size=6)
CONDITIONS = st.one_of(
    EXACT,
    st.builds(lambda p: {"prefix": p}, st.text(min_size=1, max_size=4)),
    numeric(),
    st.builds(lambda e: {"exists": e}, st.booleans()),
    st.builds(lambda v: {"anything-but": v}, st.lists(EXACT, min_size=1, max_size=3) | EXACT),
    st.builds(lambda p: {"anything-but": {"prefix": p}}, st.text(min_size=1, max_size=4)),
)
POLICIES = st.dictionaries(paths(), st.lists(CONDITIONS, min_size=1, max_size=4) | CONDITIONS,
                           max_size=4)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(policy=POLICIES, payload=JSON, headers=HEADERS, key=st.none() | st.text(max_size=6))
def test_the_filter_never_raises_on_any_message(policy, payload, headers, key):
    compiled = compile_policy(policy)
    assert isinstance(compiled, Policy)
    result = compiled.matches({"payload": payload, "headers": headers, "key": key})
    assert isinstance(result, bool)
    outcome = apply({"type": "http"}, policy, make_delivery(payload, headers=headers, key=key))
    assert (outcome is not FILTERED) == (result or not policy)


@settings(max_examples=200, deadline=None)
@given(path=paths(), payload=JSON, headers=HEADERS, key=st.none() | st.text(max_size=6))
def test_exists_true_and_false_are_opposites(path, payload, headers, key):
    document = {"payload": payload, "headers": headers, "key": key}
    present = compile_policy({path: [{"exists": True}]}).matches(document)
    absent = compile_policy({path: [{"exists": False}]}).matches(document)
    assert present != absent


@settings(max_examples=300, deadline=None)
@given(policy=JSON)
def test_any_json_policy_compiles_or_is_refused_cleanly(policy):
    try:
        compile_policy(policy)
    except FilterPolicyError as exc:
        assert exc.problems and all(isinstance(m, list) for m in exc.problems.values())
