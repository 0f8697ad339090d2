"""Standard Webhooks and trace context end to end: a receiver built on the `standardwebhooks`
library verifies every delivery (retries and redrives included) across a secret rotation, and
every attempt carries the publish's W3C trace context, to webhooks and function handlers."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
from pathlib import Path

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tests.delivery.conftest import ROOT, Request
from tests.processes import wait_until

pytestmark = pytest.mark.single_redis

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
STATE = "rojo=00f067aa0ba902b7"
OWN = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture(scope="module")
def settings(settings):
    """The API of this module allows the sample functions."""
    return dataclasses.replace(settings, mq_function_modules=("tests.handlers.sample_functions",))


@pytest.fixture(scope="module")
def app(settings):
    from api import create_app

    return create_app(settings)


def _rejected(receiver: Webhook, requests: list[Request]) -> list[Request]:
    rejected = []
    for request in requests:
        try:
            receiver.verify(request.body, request.headers)
        except WebhookVerificationError:
            rejected.append(request)
    return rejected


def _by_message(requests: list[Request], message_id: str) -> list[Request]:
    return [r for r in requests if r.headers["x-mq-message-id"] == message_id]


def test_a_receiver_verifies_every_delivery_across_a_rotation_with_trace_context(
        tenant, subscriptions, webhook, processes, tmp_path: Path) -> None:
    processes.env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    tenant.create_queue("signed")
    sub = subscriptions.create("signed", "receiver", webhook.url("/signed"),
                               handler={"secret": "generate"})
    first_secret = sub["handler_config"]["secret"]
    out = tmp_path / "calls.jsonl"
    function = tenant.admin.post("/subscriptions", {
        "topic": "signed", "consumer_group": "audit", "handler_config": {
            "type": "function", "function": "tests.handlers.sample_functions:append_line"}})
    assert function.status_code == 201, function.json
    subscriptions.created.append(function.json["id"])
    processes.scheduler()
    processes.worker()
    trace = {"traceparent": PARENT, "tracestate": STATE}

    # A: fails once, then is delivered; both attempts signed with the first secret.
    webhook.script("/signed", [500])
    a = tenant.admin.post("/publish", {"topic": "signed", "payload": {"m": "a"},
                                       "headers": {"x-out": str(out)}}, headers=trace).json
    webhook.wait_for("/signed", 2)
    before_rotation = webhook.settle("/signed", quiet_s=0.5)

    # The secret is rotated; B is signed with both, the new one first.
    rotated = tenant.admin.put(f"/subscriptions/{sub['id']}", {
        "handler_config": {"type": "http", "url": webhook.url("/signed"), "timeout_ms": 5000,
                           "secret": "generate"}})
    assert rotated.status_code == 200, rotated.json
    new_secret = rotated.json["handler_config"]["secret"]
    wait_until(lambda: _signed_twice(tenant, webhook, out))
    b = tenant.admin.post("/publish/batch", {"topic": "signed", "messages": [
        {"payload": {"m": "b"}, "headers": {"traceparent": OWN, "x-out": str(out)}}]},
        headers=trace).json
    wait_until(lambda: _by_message(webhook.received("/signed"), b["message_ids"][0]))

    # C: refused for good, dead-lettered, then redriven and delivered.
    webhook.always("/signed", 422)
    c = tenant.admin.post("/publish", {"topic": "signed", "payload": {"m": "c"},
                                       "headers": {"x-out": str(out)}}, headers=trace).json
    [letter] = wait_until(lambda: tenant.admin.get(
        f"/subscriptions/{sub['id']}/dead-letters").json["items"])
    webhook.always("/signed", 200)
    redriven = tenant.admin.post(f"/subscriptions/{sub['id']}/dead-letters/redrive",
                                 {"ids": [letter["id"]]})
    assert redriven.json == {"redriven": 1}
    wait_until(lambda: len(_by_message(webhook.received("/signed"), c["message_id"])) == 2)
    requests = webhook.settle("/signed", quiet_s=0.5)
    after_rotation = [r for r in requests if r.json["m"] in ("b", "c")]

    # Every delivery verifies with the secret the receiver holds: 0 rejected, across the
    # rotation, whether it has switched to the new secret yet or not.
    first, new = Webhook(first_secret), Webhook(new_secret)
    assert _rejected(first, requests) == []
    assert _rejected(new, after_rotation) == []
    assert len(_rejected(new, before_rotation)) == len(before_rotation)  # it did change
    assert all(len(r.headers["webhook-signature"].split(" ")) == 2 for r in after_rotation)
    sample = after_rotation[-1]
    with pytest.raises(WebhookVerificationError):
        new.verify(sample.body.replace(b'"c"', b'"x"'), sample.headers)

    # One webhook-id per message and subscription: the same on the retry and the redrive.
    for message in (a, c):
        attempts = _by_message(requests, message["message_id"])
        assert len(attempts) == 2
        assert len({r.headers["webhook-id"] for r in attempts}) == 1
        # The trace context reaches every attempt unchanged (no tracing in the worker).
        assert {(r.headers["traceparent"], r.headers["tracestate"]) for r in attempts} \
            == {(PARENT, STATE)}
    assert [r.attempt for r in _by_message(requests, c["message_id"])] == [1, 1]
    [b_request] = _by_message(requests, b["message_ids"][0])
    assert b_request.headers["traceparent"] == OWN and "tracestate" not in b_request.headers
    assert b_request.headers["x-mq-trace-id"] == OWN[3:35]

    # The function handler finds the trace context in the message's headers.
    calls = wait_until(lambda: _calls(out, 3))
    assert {c["headers"].get("traceparent") for c in calls} == {PARENT, OWN}
    assert {c["headers"].get("tracestate") for c in calls if c["headers"]["traceparent"]
            == PARENT} == {STATE}


def _signed_twice(tenant, webhook, out: Path) -> bool:
    """Whether the worker signs with the rotated secrets yet: a probe message tells."""
    message_id = tenant.admin.post("/publish", {
        "topic": "signed", "payload": {"m": "probe"}, "headers": {"x-out": str(out)}}
    ).json["message_id"]
    [probe] = wait_until(lambda: _by_message(webhook.received("/signed"), message_id))
    return len(probe.headers["webhook-signature"].split(" ")) == 2


def _calls(out: Path, at_least: int) -> list[dict] | None:
    if not out.exists():
        return None
    calls = [json.loads(line) for line in out.read_text().splitlines()]
    calls = [c for c in calls if c["payload"]["m"] != "probe"]
    return calls if len(calls) >= at_least else None


def test_a_plain_secret_verifies_as_its_base64(tenant, subscriptions, webhook, processes):
    tenant.create_queue("plain")
    subscriptions.create("plain", "receiver", webhook.url("/plain"),
                         handler={"secret": "s3cret"})
    processes.worker()
    tenant.admin.post("/publish", {"topic": "plain", "payload": {"x": 1}})
    [request] = webhook.wait_for("/plain", 1)
    Webhook(base64.b64encode(b"s3cret").decode()).verify(request.body, request.headers)
