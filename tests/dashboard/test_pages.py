"""The dashboard over the Flask test client: sign-in, the session cookie, roles, CSRF,
tenant isolation, escaping and the actions' effects seen through the REST API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from api import create_app
from tests.conftest import OPERATOR_TOKEN, TenantHandle
from tests.dashboard.conftest import Dashboard, signed_in
from tests.subscriptions.helpers import subscribe

SCRIPT = "<script>window.pwned=1</script>"


def test_sign_in_with_an_admin_key_shows_the_tenants_queues(app, tenant: TenantHandle):
    queue = tenant.create_queue()["name"]
    session = Dashboard(app.test_client())
    page = session.get("/")
    assert page.status_code == 303 and "/dashboard/sign-in" in page.headers["Location"]

    response = session.sign_in(tenant.admin.token)
    assert response.status_code == 303
    cookie = response.headers["Set-Cookie"]
    for flag in ("HttpOnly", "SameSite=Strict", "Path=/dashboard"):
        assert flag in cookie, cookie
    assert tenant.admin.token not in cookie

    overview = session.get("/")
    assert overview.status_code == 200
    assert queue in overview.text and tenant.name in overview.text
    assert tenant.admin.token not in overview.text


def test_wrong_key_is_refused_and_sign_out_ends_the_session(app, tenant: TenantHandle):
    session = Dashboard(app.test_client())
    refused = session.sign_in("mq_not-a-key")
    assert refused.status_code == 401 and "unknown API key" in refused.text
    assert session.get("/").status_code == 303

    session.sign_in(tenant.admin.token)
    assert session.get("/").status_code == 200
    assert session.post("/sign-out").status_code == 303
    assert session.get("/").status_code == 303


def test_revoked_key_ends_its_sessions(app, tenant: TenantHandle):
    consumer = tenant.key("consumer")
    session = signed_in(app, consumer.token)
    assert session.get("/").status_code == 200
    [key] = [k for k in tenant.admin.get("/api-keys").json["items"] if k["role"] == "consumer"]
    assert tenant.admin.delete(f"/api-keys/{key['id']}").status_code == 204
    assert session.get("/").status_code == 303


def test_every_response_carries_a_same_origin_csp_and_loads_nothing_from_elsewhere(
        app, tenant: TenantHandle):
    session = signed_in(app, tenant.admin.token)
    queue = tenant.create_queue()["name"]
    for path in ("/", f"/queues/{queue}", "/workers", "/schemas", "/schedules", "/messages",
                 "/sign-in", "/static/dashboard.js"):
        response = session.get(path)
        assert response.status_code == 200, path
        csp = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        if response.mimetype == "text/html":
            assert "<script>" not in response.text  # no inline script anywhere
            assert "http://" not in response.text and "https://" not in response.text, path


def test_form_post_without_csrf_token_is_refused(app, tenant: TenantHandle):
    queue = tenant.create_queue()["name"]
    sub = subscribe(tenant, queue)
    session = signed_in(app, tenant.admin.token)
    refused = session.post(f"/subscriptions/{sub['id']}/pause", csrf=False)
    assert refused.status_code == 403 and "CSRF" in refused.text
    forged = session.post(f"/subscriptions/{sub['id']}/pause", {"csrf_token": "forged"})
    assert forged.status_code == 403
    assert tenant.admin.get(f"/subscriptions/{sub['id']}").json["status"] == "active"

    session.get(f"/subscriptions/{sub['id']}")
    assert session.post(f"/subscriptions/{sub['id']}/pause").status_code == 303
    assert tenant.admin.get(f"/subscriptions/{sub['id']}").json["status"] == "paused"


def test_roles_decide_what_the_pages_offer_and_allow(app, tenant: TenantHandle):
    queue = tenant.create_queue()["name"]
    sub = subscribe(tenant, queue)
    producer = signed_in(app, tenant.key("producer").token)
    page = producer.get(f"/queues/{queue}").text
    assert 'id="publish-button"' in page
    assert f"/dashboard/subscriptions/{sub['id']}" not in page
    assert producer.get(f"/subscriptions/{sub['id']}").status_code == 403
    assert producer.post(f"/subscriptions/{sub['id']}/pause").status_code == 403

    consumer = signed_in(app, tenant.key("consumer").token)
    page = consumer.get(f"/queues/{queue}").text
    assert 'id="publish-button"' not in page
    assert f"/dashboard/subscriptions/{sub['id']}" in page
    refused = consumer.post(f"/queues/{queue}/publish", {"payload": '{"a": 1}'})
    assert refused.status_code == 403
    assert consumer.get("/schedules").status_code == 403
    assert consumer.get(f"/subscriptions/{sub['id']}").status_code == 200


def test_a_tenant_cannot_open_another_tenants_pages(app, tenant: TenantHandle, other_tenant):
    queue = other_tenant.create_queue()["name"]
    sub = subscribe(other_tenant, queue)
    session = signed_in(app, tenant.admin.token)
    assert session.get(f"/subscriptions/{sub['id']}").status_code == 404
    assert session.get(f"/queues/{queue}").status_code == 404
    assert session.post(f"/subscriptions/{sub['id']}/pause").status_code == 404
    assert other_tenant.admin.get(f"/subscriptions/{sub['id']}").json["status"] == "active"


def test_payloads_and_headers_are_escaped(app, tenant: TenantHandle):
    queue = tenant.create_queue()["name"]
    published = tenant.admin.post("/publish", {"topic": queue, "payload": {"html": SCRIPT},
                                               "headers": {"x-evil": SCRIPT}, "key": SCRIPT})
    assert published.status_code == 201, published.json
    session = signed_in(app, tenant.admin.token)
    for path in (f"/queues/{queue}", f"/messages/{published.json['message_id']}"):
        text = session.get(path).text
        assert SCRIPT not in text, path
        assert "&lt;script&gt;" in text, path


def test_publish_form_publishes_and_bad_json_is_a_clear_422(app, tenant: TenantHandle):
    queue = tenant.create_queue()["name"]
    session = signed_in(app, tenant.admin.token)
    session.get(f"/queues/{queue}")
    sent = session.post(f"/queues/{queue}/publish", {"payload": '{"order": 7}', "key": "k1"},
                        follow_redirects=True)
    assert sent.status_code == 200 and "published " in sent.text
    assert "{&#34;order&#34;:7}" in sent.text or '{"order":7}' in sent.text
    bad = session.post(f"/queues/{queue}/publish", {"payload": "{not json"})
    assert bad.status_code == 422 and "not valid JSON" in bad.text


def test_cancel_a_recurring_schedule_and_a_delayed_message(app, tenant: TenantHandle):
    queue = tenant.create_queue()["name"]
    schedule = tenant.admin.post("/publish/scheduled", {"topic": queue, "cron": "0 3 * * *",
                                                        "payload": 1, "name": "nightly"}).json
    later = (datetime.now(UTC) + timedelta(hours=3)).isoformat().replace("+00:00", "Z")
    delayed = tenant.admin.post("/publish/scheduled", {"topic": queue, "deliver_at": later,
                                                       "payload": 2}).json
    session = signed_in(app, tenant.admin.token)
    page = session.get("/schedules").text
    assert "nightly" in page and delayed["message_id"] in page

    assert session.post(f"/schedules/{schedule['schedule_id']}/cancel").status_code == 303
    assert tenant.admin.get(f"/schedules/{schedule['schedule_id']}").status_code == 404
    assert session.post(f"/messages/{delayed['message_id']}/cancel").status_code == 303
    assert tenant.admin.get(f"/messages/{delayed['message_id']}").json["status"] == "cancelled"


def test_operator_sees_tenants_and_not_tenant_pages(app, tenant: TenantHandle):
    session = signed_in(app, OPERATOR_TOKEN)
    page = session.get("/")
    assert page.status_code == 200 and tenant.name in page.text and "operator" in page.text
    assert OPERATOR_TOKEN not in page.text
    assert session.get("/workers").status_code == 200
    assert session.get("/schemas").status_code == 403


def test_dashboard_is_off_without_a_secret_key(settings):
    from dataclasses import replace

    app = create_app(replace(settings, mq_secret_key=None))
    response = app.test_client().get("/dashboard/sign-in")
    assert response.status_code == 503 and "MQ_SECRET_KEY" in response.text


def test_seek_moves_the_group_and_bad_targets_are_422(app, tenant: TenantHandle):
    queue = tenant.create_queue()["name"]
    sub = subscribe(tenant, queue, status="paused")
    for n in range(3):
        assert tenant.admin.post("/publish", {"topic": queue, "payload": n}).status_code == 201
    session = signed_in(app, tenant.admin.token)
    session.get(f"/subscriptions/{sub['id']}")

    def lag() -> int:
        return tenant.admin.get(f"/subscriptions/{sub['id']}").json["stats"]["lag"]

    assert session.post(f"/subscriptions/{sub['id']}/seek", {"to": "latest"}).status_code == 303
    assert lag() == 0
    assert session.post(f"/subscriptions/{sub['id']}/seek", {"to": "earliest"}).status_code == 303
    assert lag() == 3
    later = (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S")
    moved = session.post(f"/subscriptions/{sub['id']}/seek", {"to": "timestamp",
                                                              "timestamp": later})
    assert moved.status_code == 303 and lag() == 0
    bad = session.post(f"/subscriptions/{sub['id']}/seek", {"to": "timestamp",
                                                            "timestamp": "soon"})
    assert bad.status_code == 422 and "not a date and time" in bad.text


def test_delivery_status_filter_is_checked(app, tenant: TenantHandle):
    queue = tenant.create_queue()["name"]
    sub = subscribe(tenant, queue)
    session = signed_in(app, tenant.admin.token)
    assert session.get(f"/subscriptions/{sub['id']}?status=failed").status_code == 200
    assert session.get(f"/subscriptions/{sub['id']}?status=bogus").status_code == 422


def test_a_page_answered_after_sign_out_does_not_restore_the_session(app, tenant: TenantHandle):
    session = signed_in(app, tenant.admin.token)
    assert session.get("/").status_code == 200
    poll = session.get("/", headers={"HX-Request": "true"})  # a live refresh
    assert "Set-Cookie" not in poll.headers  # so one answered late cannot undo a sign-out
