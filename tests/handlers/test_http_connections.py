"""The webhook handler's connections: a host is resolved once, as the connection is made, and
only checked addresses are connected to (a real local HTTP server stands in for the webhook)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pytest

from handlers.base import PermanentFailure
from handlers.http import HttpHandler
from handlers.urls import check_webhook_url
from mq.settings import Settings
from tests.delivery.conftest import webhook  # noqa: F401  (fixture reused by name)
from tests.handlers.helpers import make_delivery


class ScriptedDNS:
    """Answers each lookup with the next answer (the last one repeats), and counts lookups."""

    def __init__(self, *answers: Sequence[str]) -> None:
        self.answers = list(answers)
        self.lookups: list[str] = []

    def __call__(self, host: str, port: int) -> Sequence[str]:
        self.lookups.append(host)
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def _handler(settings: Settings, dns: ScriptedDNS, *, allow_private: bool) -> HttpHandler:
    return HttpHandler(dataclasses.replace(settings, mq_webhook_allow_private=allow_private),
                       resolver=dns)


def test_connection_goes_to_the_address_the_pool_resolved(settings, webhook):  # noqa: F811
    dns = ScriptedDNS(["127.0.0.1"])
    handler = _handler(settings, dns, allow_private=True)
    try:
        url = f"http://hooks.invalid:{webhook.port}/pinned"  # no real DNS knows this name
        result = handler.deliver({"type": "http", "url": url}, make_delivery({"n": 1}))
    finally:
        handler.close()
    assert result.status == 200
    [request] = webhook.received("/pinned")
    assert request.headers["host"] == f"hooks.invalid:{webhook.port}"
    assert dns.lookups == ["hooks.invalid"]


def test_name_rebound_to_a_private_address_after_the_check_is_never_connected_to(
        settings, webhook):  # noqa: F811
    """The subscription check saw a public address; by delivery the name points inside."""
    dns = ScriptedDNS(["93.184.216.34"], ["127.0.0.1"])
    url = f"http://rebound.example:{webhook.port}/inside"
    check_webhook_url(url, allow_private=False, resolver=dns)  # passes: public then
    handler = _handler(settings, dns, allow_private=False)
    try:
        with pytest.raises(PermanentFailure, match=r"refused.*127\.0\.0\.1"):
            handler.deliver({"type": "http", "url": url}, make_delivery({"n": 1}))
    finally:
        handler.close()
    assert webhook.received("/inside") == []
    assert dns.lookups == ["rebound.example", "rebound.example"]  # once each, no third


def test_a_name_with_one_private_address_among_public_ones_is_refused(settings, webhook):  # noqa: F811
    dns = ScriptedDNS(["93.184.216.34", "127.0.0.1"])
    handler = _handler(settings, dns, allow_private=False)
    try:
        with pytest.raises(PermanentFailure, match="refused"):
            handler.deliver({"type": "http", "url": f"http://mixed.example:{webhook.port}/m"},
                            make_delivery({"n": 1}))
    finally:
        handler.close()
    assert webhook.received("/m") == []


def test_credentials_in_the_url_are_sent_as_basic_auth(settings, webhook):  # noqa: F811
    handler = _handler(settings, ScriptedDNS(["127.0.0.1"]), allow_private=True)
    try:
        url = f"http://us%40er:p%3Ass@127.0.0.1:{webhook.port}/with%20auth?x=1"
        result = handler.deliver({"type": "http", "url": url}, make_delivery({"n": 1}))
    finally:
        handler.close()
    assert result.status == 200
    [request] = webhook.received("/with%20auth?x=1")
    assert request.headers["authorization"] == "Basic dXNAZXI6cDpzcw=="  # us@er:p:ss
    assert request.headers["user-agent"] == "mq-webhooks/1"
