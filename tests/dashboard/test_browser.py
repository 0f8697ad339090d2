"""The dashboard in a real headless Chromium against the real processes: the API under
gunicorn, a worker and a scheduler, on PostgreSQL and Redis, delivering to a local webhook.

One stack and one browser serve the module. A failing test leaves a screenshot of the page
next to the processes' logs (printed with them)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from mq.settings import Settings
from tests.browser import (
    browser_missing,
    chromium,
    click,
    sign_in,
    text_by_id,
    text_of,
    wait_for,
)
from tests.conftest import OPERATOR_TOKEN, TenantHandle, make_tenant
from tests.delivery.conftest import Processes, Webhook, webhook_server
from tests.processes import free_port

if browser_missing():  # CI installs the packages (.ci/run); a bare checkout may lack them
    pytest.fail(f"browser tests need Chromium: {browser_missing()}", pytrace=False)

SCRIPT = "<script>window.pwned = 1</script>"


@pytest.fixture(scope="module")
def stack(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[
        Processes, str]]:
    processes = Processes(settings, tmp_path_factory.mktemp("dashboard-stack"))
    port = free_port()
    processes.api(port)
    processes.worker(threads=4)
    processes.scheduler()
    yield processes, f"http://127.0.0.1:{port}"
    processes.close()


@pytest.fixture(scope="module")
def hook() -> Iterator[Webhook]:
    with webhook_server() as server:
        yield server


@pytest.fixture(scope="module")
def driver() -> Iterator[WebDriver]:
    with chromium() as browser:
        yield browser


@pytest.fixture
def base(stack: tuple[Processes, str], driver: WebDriver, request: pytest.FixtureRequest
         ) -> Iterator[str]:
    """The API's address; after a failed test, a screenshot beside the processes' logs."""
    processes, url = stack
    driver.get_log("browser")  # start each test with an empty console
    yield url
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        shot = Path(processes.tmp) / f"{request.node.name}.png"
        driver.save_screenshot(str(shot))
        print(f"\nscreenshot: {shot}\npage: {driver.current_url}\n{processes.logs()}")


def subscribe(tenant: TenantHandle, queue: str, url: str, **fields: object) -> dict:
    body = {"topic": queue, "consumer_group": f"g-{uuid.uuid4().hex[:6]}",
            "handler_config": {"type": "http", "url": url, "timeout_ms": 5000},
            "session_timeout_ms": 2000, "retry_delay_ms": 100, "max_retry_delay_ms": 200,
            **fields}
    response = tenant.admin.post("/subscriptions", body)
    assert response.status_code == 201, response.json
    return response.json


def publish(tenant: TenantHandle, queue: str, payload: object) -> str:
    response = tenant.admin.post("/publish", {"topic": queue, "payload": payload})
    assert response.status_code == 201, response.json
    return response.json["message_id"]


def page_shows(driver: WebDriver, text: str, timeout: float = 20) -> None:
    wait_for(driver, lambda d: text in text_of(d), f"'{text}' on the page", timeout)


def console_errors(driver: WebDriver) -> list[str]:
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


# -- sign-in and what each role sees ------------------------------------------------------
def test_sign_in_with_each_role_and_the_operator_token(driver, base, tenant: TenantHandle):
    queue = tenant.create_queue()["name"]
    sub = subscribe(tenant, queue, "http://127.0.0.1:9/nowhere", status="paused")
    sign_in(driver, base, tenant.admin.token)
    page_shows(driver, queue)
    assert "admin" in text_of(driver)

    sign_in(driver, base, tenant.key("producer").token)
    driver.get(f"{base}/dashboard/queues/{queue}")
    page_shows(driver, "Publish a test message")
    driver.get(f"{base}/dashboard/subscriptions/{sub['id']}")
    page_shows(driver, "403")

    sign_in(driver, base, tenant.key("consumer").token)
    driver.get(f"{base}/dashboard/queues/{queue}")
    page_shows(driver, "Subscriptions")
    assert "Publish a test message" not in text_of(driver)
    driver.get(f"{base}/dashboard/subscriptions/{sub['id']}")
    page_shows(driver, "Resume")

    sign_in(driver, base, OPERATOR_TOKEN)
    page_shows(driver, tenant.name)
    assert "operator" in text_of(driver)
    click(driver, "sign-out")
    wait_for(driver, lambda d: "/sign-in" in d.current_url, "the sign-in page")


def test_every_page_shows_the_stacks_data_from_this_origin_only(
        driver, base, tenant: TenantHandle, hook: Webhook, stack):
    queue = tenant.create_queue()["name"]
    sub = subscribe(tenant, queue, hook.url("/pages"))
    message_id = publish(tenant, queue, {"order": 42})
    hook.wait_for("/pages", 1)
    schema = tenant.admin.post("/schemas", {"subject": f"orders-{uuid.uuid4().hex[:6]}",
                                            "format": "json",
                                            "definition": {"type": "object"}})
    assert schema.status_code == 201, schema.json
    sign_in(driver, base, tenant.admin.token)
    processes, _ = stack
    worker_pid = str(next(b["pid"] for b in processes.beats("worker")))
    checks = [
        ("/dashboard/", queue),
        (f"/dashboard/queues/{queue}", message_id),
        (f"/dashboard/subscriptions/{sub['id']}", message_id),
        (f"/dashboard/messages/{message_id}", "delivered"),
        ("/dashboard/workers", worker_pid),
        ("/dashboard/schemas", schema.json["subject"]),
        ("/dashboard/schedules", "Recurring"),
    ]
    for path, expected in checks:
        driver.get(base + path)
        page_shows(driver, expected)
        loaded = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)")
        assert all(url.startswith(base) for url in loaded), (path, loaded)
    driver.get(f"{base}/dashboard/messages/{message_id}")
    page_shows(driver, "attempt 1")
    assert '"order": 42' in text_by_id(driver, "payload-text")
    time.sleep(2.5)  # at least one live refresh, which must not trip the CSP either
    assert console_errors(driver) == []


# -- acting ---------------------------------------------------------------------------------
def test_pause_stops_deliveries_and_resume_restarts_them(driver, base, tenant, hook):
    queue = tenant.create_queue()["name"]
    sub = subscribe(tenant, queue, hook.url("/pause"))
    publish(tenant, queue, 1)
    hook.wait_for("/pause", 1)
    sign_in(driver, base, tenant.admin.token)
    driver.get(f"{base}/dashboard/subscriptions/{sub['id']}")
    click(driver, "pause")
    page_shows(driver, "Resume")
    time.sleep(2.5)  # workers apply a pause within 2 s
    held = [publish(tenant, queue, n) for n in range(3)]
    time.sleep(3)
    assert len(hook.received("/pause")) == 1, "delivered while paused"

    click(driver, "resume")
    page_shows(driver, "Pause")
    got = hook.wait_for("/pause", 4)
    assert {r.headers["x-mq-message-id"] for r in got[1:]} == set(held)


def test_redrive_from_the_page_delivers_the_dead_letters(driver, base, tenant, hook):
    queue = tenant.create_queue()["name"]
    hook.always("/redrive", 500)
    sub = subscribe(tenant, queue, hook.url("/redrive"), max_retry_attempts=0)
    sign_in(driver, base, tenant.admin.token)
    driver.get(f"{base}/dashboard/subscriptions/{sub['id']}")
    page_shows(driver, "No dead letters.")
    ids = [publish(tenant, queue, n) for n in range(2)]
    # Without reloading: the page's live parts refresh every 2 s.
    wait_for(driver, lambda d: d.find_element(By.ID, "dead-total").text == "2",
             "two dead letters")
    page_shows(driver, ids[0])
    hook.always("/redrive", 200)
    click(driver, "redrive-all")
    page_shows(driver, "redrove 2 dead letters")
    got = hook.wait_for("/redrive", 4)
    assert sorted(r.headers["x-mq-message-id"] for r in got[2:]) == sorted(ids)


def test_purge_asks_first(driver, base, tenant, hook):
    queue = tenant.create_queue()["name"]
    hook.always("/purge", 500)
    sub = subscribe(tenant, queue, hook.url("/purge"), max_retry_attempts=0)
    publish(tenant, queue, 1)
    sign_in(driver, base, tenant.admin.token)
    driver.get(f"{base}/dashboard/subscriptions/{sub['id']}")
    wait_for(driver, lambda d: d.find_element(By.ID, "dead-total").text == "1", "a dead letter")
    click(driver, "purge")
    page_shows(driver, "Purge dead letters?")
    assert tenant.admin.get(f"/subscriptions/{sub['id']}/dead-letters").json["items"]
    click(driver, "confirm-purge")
    page_shows(driver, "purged 1 dead letter")
    assert tenant.admin.get(f"/subscriptions/{sub['id']}/dead-letters").json["items"] == []


def test_cancel_removes_a_schedule(driver, base, tenant):
    queue = tenant.create_queue()["name"]
    created = tenant.admin.post("/publish/scheduled", {"topic": queue, "cron": "0 4 * * *",
                                                       "name": "nightly-report", "payload": 1})
    assert created.status_code == 201, created.json
    schedule_id = created.json["schedule_id"]
    sign_in(driver, base, tenant.admin.token)
    driver.get(f"{base}/dashboard/schedules")
    page_shows(driver, "nightly-report")
    wait_for(driver, lambda d: d.find_element(By.CSS_SELECTOR, f'[data-cancel="{schedule_id}"]')
             .click() or True, "the cancel button")
    page_shows(driver, "cancelled")
    assert "nightly-report" not in text_by_id(driver, "recurring")
    assert tenant.admin.get(f"/schedules/{schedule_id}").status_code == 404


# -- safety ---------------------------------------------------------------------------------
def test_script_payload_is_shown_as_text_and_never_runs(driver, base, tenant):
    queue = tenant.create_queue()["name"]
    message_id = publish(tenant, queue, {"html": SCRIPT})
    sign_in(driver, base, tenant.admin.token)
    for path in (f"/dashboard/queues/{queue}", f"/dashboard/messages/{message_id}"):
        driver.get(base + path)
        page_shows(driver, "<script>window.pwned = 1</script>")
        assert driver.execute_script("return window.pwned") is None


def test_form_post_without_csrf_token_is_refused(driver, base, tenant, hook):
    queue = tenant.create_queue()["name"]
    sub = subscribe(tenant, queue, hook.url("/csrf"))
    sign_in(driver, base, tenant.admin.token)
    driver.get(f"{base}/dashboard/subscriptions/{sub['id']}")
    driver.execute_script(
        "document.querySelectorAll('input[name=csrf_token]').forEach(e => e.remove())")
    click(driver, "pause")
    page_shows(driver, "403")
    assert "CSRF" in text_of(driver)
    assert tenant.admin.get(f"/subscriptions/{sub['id']}").json["status"] == "active"


def test_another_tenants_subscription_page_is_not_found(driver, base, tenant, client):
    other = make_tenant(client)
    queue = other.create_queue()["name"]
    sub = subscribe(other, queue, "http://127.0.0.1:9/nowhere", status="paused")
    sign_in(driver, base, tenant.admin.token)
    driver.get(f"{base}/dashboard/subscriptions/{sub['id']}")
    page_shows(driver, "404")
    assert sub["consumer_group"] not in text_of(driver)
