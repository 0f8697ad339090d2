"""Webhook URLs that lead into private networks are refused unless the operator allows it."""

from __future__ import annotations

import dataclasses

import pytest

from api import create_app
from handlers.urls import (
    WebhookURLError,
    check_webhook_url,
    connectable_addresses,
    is_forbidden_address,
)
from tests.conftest import make_tenant
from tests.subscriptions.helpers import body

PRIVATE_URLS = [
    "http://127.0.0.1:9000/hook",
    "http://localhost/hook",
    "http://app.localhost/hook",
    "http://10.1.2.3/hook",
    "http://192.168.0.10/hook",
    "http://172.16.5.4/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://100.100.100.200/latest/meta-data/",
    "http://[::1]/hook",
    "http://[fe80::1]/hook",
    "http://[::ffff:10.0.0.1]/hook",
    "http://0.0.0.0/hook",
    "http://2130706433/hook",
    "http://0x7f.1/hook",
    "http://224.0.0.1/hook",
]


@pytest.fixture(scope="module")
def strict_app(settings):
    app = create_app(dataclasses.replace(settings, mq_webhook_allow_private=False))
    yield app
    app.extensions["mq"].database.dispose()


@pytest.fixture
def strict_tenant(strict_app):
    return make_tenant(strict_app.test_client())


@pytest.mark.parametrize("url", PRIVATE_URLS)
def test_private_urls_are_refused(strict_tenant, url):
    strict_tenant.create_queue("orders")
    response = strict_tenant.admin.post(
        "/subscriptions", body("orders", handler_config={"type": "http", "url": url}))
    assert response.status_code == 422, (url, response.json)
    assert "url" in response.json["error"]["details"]["handler_config"]


def test_public_address_is_accepted_and_update_is_checked_too(strict_tenant):
    strict_tenant.create_queue("orders")
    created = strict_tenant.admin.post("/subscriptions", body(
        "orders", handler_config={"type": "http", "url": "https://93.184.216.34/hook"}))
    assert created.status_code == 201, created.json
    response = strict_tenant.admin.put(f"/subscriptions/{created.json['id']}", {
        "handler_config": {"type": "http", "url": "http://127.0.0.1/hook"}})
    assert response.status_code == 422
    assert "url" in response.json["error"]["details"]["handler_config"]


def test_private_urls_pass_when_allowed(tenant):
    tenant.create_queue("orders")
    response = tenant.admin.post("/subscriptions", body(
        "orders", handler_config={"type": "http", "url": "http://127.0.0.1:9000/hook"}))
    assert response.status_code == 201, response.json


def test_names_are_judged_by_what_they_resolve_to():
    def resolver(answers):
        return lambda host, port: answers

    with pytest.raises(WebhookURLError, match=r"10\.0\.0\.7"):
        check_webhook_url("https://hooks.example.com/x", allow_private=False,
                          resolver=resolver(["93.184.216.34", "10.0.0.7"]))
    target = check_webhook_url("https://hooks.example.com:8443/x", allow_private=False,
                               resolver=resolver(["93.184.216.34"]))
    assert (target.host, target.port, target.addresses) == \
        ("hooks.example.com", 8443, ("93.184.216.34",))


def test_unresolvable_names_pass_the_check_but_cannot_be_connected_to():
    def nowhere(host, port):
        raise OSError("Name or service not known")

    target = check_webhook_url("http://nowhere.example/x", allow_private=False, resolver=nowhere)
    assert target.addresses == ()
    with pytest.raises(WebhookURLError, match="does not resolve"):
        connectable_addresses("nowhere.example", 80, allow_private=False, resolver=nowhere)


@pytest.mark.parametrize(("address", "forbidden"), [
    ("8.8.8.8", False), ("2606:4700::1111", False), ("127.0.0.2", True),
    ("::ffff:169.254.169.254", True), ("2002:7f00:1::", True), ("fc00::1", True),
    ("100.64.0.1", True), ("240.0.0.1", True), ("255.255.255.255", True),
])
def test_address_classes(address, forbidden):
    assert is_forbidden_address(address) is forbidden
