"""`"secret": "generate"` and secret rotation through the API (Standard Webhooks)."""

from __future__ import annotations

import time

from handlers.signing import PREVIOUS, PREVIOUS_UNTIL
from tests.subscriptions.helpers import HOOK, subscribe


def _stored(app, subscription_id: str) -> dict:
    from models import Subscription

    with app.extensions["mq"].database.session() as session:
        return session.get(Subscription, subscription_id).handler_config


def test_a_generated_secret_is_answered_once(tenant, app) -> None:
    sub = subscribe(tenant, tenant.create_queue()["name"],
                    handler_config={"type": "http", "url": HOOK, "secret": "generate"})
    secret = sub["handler_config"]["secret"]
    assert secret.startswith("whsec_") and sub["handler_config"]["secret_set"] is True
    assert _stored(app, sub["id"])["secret"] == secret
    for response in (tenant.admin.get(f"/subscriptions/{sub['id']}"),
                     tenant.admin.get("/subscriptions")):
        assert secret not in response.get_data(as_text=True)
    # An update that does not ask for a new one answers none.
    response = tenant.admin.put(f"/subscriptions/{sub['id']}", {"max_retry_attempts": 5})
    assert "secret" not in response.json["handler_config"]


def test_a_changed_secret_keeps_the_old_one_for_the_overlap_unseen(tenant, app) -> None:
    sub = subscribe(tenant, tenant.create_queue()["name"],
                    handler_config={"type": "http", "url": HOOK, "secret": "first"})
    before = time.time()
    response = tenant.admin.put(f"/subscriptions/{sub['id']}", {
        "handler_config": {"type": "http", "url": HOOK, "secret": "generate"}})
    assert response.status_code == 200, response.json
    new = response.json["handler_config"]["secret"]
    stored = _stored(app, sub["id"])
    assert (stored["secret"], stored[PREVIOUS]) == (new, "first")
    overlap = app.extensions["mq"].settings.mq_webhook_secret_overlap_s
    assert before + overlap - 1 <= stored[PREVIOUS_UNTIL] <= time.time() + overlap
    shown = tenant.admin.get(f"/subscriptions/{sub['id']}").get_data(as_text=True)
    assert "first" not in shown and PREVIOUS not in shown and new not in shown

    # Putting back what was read keeps both secrets and the running overlap.
    echoed = tenant.admin.get(f"/subscriptions/{sub['id']}").json["handler_config"]
    assert tenant.admin.put(f"/subscriptions/{sub['id']}",
                            {"handler_config": echoed}).status_code == 200
    assert _stored(app, sub["id"]) == stored


def test_rotation_state_and_bad_secrets_are_refused(tenant) -> None:
    topic = tenant.create_queue()["name"]
    for config, field in (({PREVIOUS: "x"}, PREVIOUS), ({"secret": "whsec_***"}, "secret"),
                          ({"secret": "whsec_"}, "secret")):
        response = tenant.admin.post("/subscriptions", {
            "topic": topic, "consumer_group": "g",
            "handler_config": {"type": "http", "url": HOOK, **config}})
        assert response.status_code == 422, response.json
        assert field in response.json["error"]["details"]["handler_config"]
