"""The `http` handler: webhooks, as docs/api.md's Conventions describe them.

POST of the payload (or, with `handler_config.envelope`, the envelope) as JSON to `url`, with
the subscription's `headers`, the `X-MQ-*` headers, the Standard Webhooks headers and the
message's trace context; signatures are `handlers.signing`'s. With tracing on, the request is
a client span and its `traceparent` names that span (same trace id).
2xx is success; 408, 429, 5xx, timeouts and network errors are retried; any other answer is
permanent. The URL is checked again at delivery time, and the connection pool resolves each
host once and connects only to checked addresses (`CheckedNetworkBackend`): a name that comes
to resolve to a private address fails the delivery as permanent, whatever DNS answered before.
"""

from __future__ import annotations

import base64
import functools
import json
import time
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, unquote_to_bytes

import httpcore
import httpx

from handlers.base import (
    Delivery,
    HandlerResult,
    PermanentFailure,
    RetryableFailure,
    excerpt,
)
from handlers.signing import mq_signature, secrets_in_use, standard_signatures, webhook_id
from handlers.urls import (
    Resolver,
    WebhookURLError,
    check_webhook_url,
    connectable_addresses,
    system_resolver,
)
from mq.settings import Settings
from mq.tracing import TraceContext, Tracing

DEFAULT_TIMEOUT_MS = 30_000
RETRYABLE_STATUSES = frozenset({408, 429})
#: Connections kept per worker process (shared by its worker threads).
MAX_CONNECTIONS = 100
#: How long an idle connection is kept (httpx's default).
KEEPALIVE_EXPIRY_S = 5.0


class CheckedNetworkBackend(httpcore.SyncBackend):
    """Connects only where webhooks may go: the host is resolved here, once per connection, and
    every address is checked before one is connected to (no second lookup that a rebinding
    DNS server could answer differently). TLS and `Host` still use the name."""

    def __init__(self, allow_private: bool, resolver: Resolver) -> None:
        self.allow_private = allow_private
        self.resolver = resolver

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        addresses = connectable_addresses(host, port, allow_private=self.allow_private,
                                          resolver=self.resolver)
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses:
            try:
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        raise failure or httpcore.ConnectError(f"no address to connect to for '{host}'")


class HttpHandler:
    """One connection pool per worker process, shared by its threads. Webhooks connect
    directly: an egress proxy from the environment is not used (its address is not the one
    to check).

    Requests go to httpcore's pool itself rather than through an `httpx.Client`: the client's
    layers (request building, cookies, auth and redirect handling, none of which a webhook
    uses) cost more CPU than the exchange itself (profiled: half of a worker's time per
    delivered message). httpx still parses the URL, as before."""

    def __init__(self, settings: Settings, resolver: Resolver = system_resolver,
                 tracing: Tracing | None = None) -> None:
        self.allow_private = settings.mq_webhook_allow_private
        self.tracing = tracing or Tracing()
        self.pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),
            max_connections=MAX_CONNECTIONS,
            max_keepalive_connections=MAX_CONNECTIONS,
            keepalive_expiry=KEEPALIVE_EXPIRY_S,
            network_backend=CheckedNetworkBackend(self.allow_private, resolver))

    def deliver(self, config: dict[str, Any], delivery: Delivery) -> HandlerResult:
        url = str(config.get("url", ""))
        try:
            check_webhook_url(url, allow_private=self.allow_private, resolver=None)
            target, fixed_headers = _target(url)
        except (WebhookURLError, httpx.InvalidURL) as exc:
            raise PermanentFailure(f"webhook URL refused: {exc}") from None
        body = json.dumps(_body(config, delivery), ensure_ascii=False,
                          separators=(",", ":")).encode()
        timeout = max(1, int(config.get("timeout_ms") or DEFAULT_TIMEOUT_MS)) / 1000
        attributes = _span_attributes(target) if self.tracing.on else None
        with self.tracing.span("POST", "CLIENT", attributes=attributes) as own:
            trace = own or TraceContext.of_headers(delivery.headers)
            headers = [*fixed_headers, *_headers(config, delivery, body, trace).items()]
            status, text = self._exchange(target, headers, body, timeout)
            if own is not None:
                self.tracing.annotate(http__response__status_code=status)
            if 200 <= status < 300:
                return HandlerResult(status, text)
            message = f"HTTP {status}"
            if status in RETRYABLE_STATUSES or status >= 500:
                raise RetryableFailure(message, status=status, excerpt=text)
            raise PermanentFailure(message, status=status, excerpt=text)

    def _exchange(self, target: httpcore.URL, headers: list[tuple[str, str]], body: bytes,
                  timeout: float) -> tuple[int, str]:
        """The answer's status and body excerpt; failures to get one raise."""
        try:
            response = self.pool.request(
                "POST", target, headers=headers, content=body,
                extensions={"timeout": dict.fromkeys(("connect", "read", "write", "pool"),
                                                     timeout)})
        except WebhookURLError as exc:  # raised by the connection: see CheckedNetworkBackend
            raise PermanentFailure(f"webhook URL refused: {exc}") from None
        except httpcore.TimeoutException as exc:
            raise RetryableFailure(f"timed out after {timeout:g}s: {type(exc).__name__}") \
                from None
        except _REQUEST_FAILED as exc:
            raise RetryableFailure(f"request failed: {type(exc).__name__}: {exc}") from None
        return response.status, excerpt(response.content)

    def close(self) -> None:
        self.pool.close()


USER_AGENT = ("User-Agent", "mq-webhooks/1")
#: What a failed exchange raises, but for timeouts (httpcore's exceptions share no base).
_REQUEST_FAILED = (httpcore.NetworkError, httpcore.ProtocolError, httpcore.ProxyError,
                   httpcore.UnsupportedProtocol)


@functools.lru_cache(maxsize=1024)
def _target(url: str) -> tuple[httpcore.URL, tuple[tuple[str, str], ...]]:
    """The URL as httpx normalizes it (IDNA host, percent-encoded path), for httpcore, with
    the headers every request to it carries: credentials in the URL become basic auth, as
    httpx sends them."""
    parsed = httpx.URL(url)
    target = httpcore.URL(scheme=parsed.raw_scheme, host=parsed.raw_host, port=parsed.port,
                          target=parsed.raw_path)
    if not parsed.userinfo:
        return target, (USER_AGENT,)
    credentials = base64.b64encode(unquote_to_bytes(parsed.userinfo)).decode()
    return target, (USER_AGENT, ("Authorization", f"Basic {credentials}"))


def _body(config: dict[str, Any], delivery: Delivery) -> Any:
    if not config.get("envelope"):
        return delivery.payload
    return {
        "message_id": delivery.message_id,
        "topic": delivery.topic,
        "partition": delivery.partition,
        "offset": delivery.offset,
        "key": delivery.key,
        "headers": delivery.headers,
        "payload": delivery.payload,
        "published_at": _iso(delivery.published_ms),
        "attempt": delivery.attempt,
    }


def _headers(config: dict[str, Any], delivery: Delivery, body: bytes,
             trace: TraceContext | None) -> dict[str, str]:
    headers = {str(k): str(v) for k, v in (config.get("headers") or {}).items()}
    now = time.time()
    timestamp = str(int(now))
    msg_id = webhook_id(delivery.subscription_id, delivery.message_id)
    headers.update({
        "Content-Type": "application/json",
        "X-MQ-Message-Id": _header_text(delivery.message_id),
        "X-MQ-Topic": _header_text(delivery.topic),
        "X-MQ-Attempt": str(delivery.attempt),
        "X-MQ-Timestamp": timestamp,
        "webhook-id": msg_id,
        "webhook-timestamp": timestamp,
    })
    optional = {"X-MQ-Key": delivery.key, "X-MQ-Correlation-Id": delivery.correlation_id,
                "X-MQ-Trace-Id": delivery.trace_id}
    headers.update({name: _header_text(value) for name, value in optional.items() if value})
    if trace is not None:
        headers.update(trace.as_headers())
    in_use = secrets_in_use(config, now)
    if in_use:
        headers["X-MQ-Signature"] = mq_signature(in_use[0], timestamp, body)
        headers["webhook-signature"] = standard_signatures(in_use, msg_id, timestamp, body)
    return headers


def _span_attributes(target: httpcore.URL) -> dict[str, Any]:
    """The HTTP client span's attributes (the URL without credentials or query)."""
    scheme, host = target.scheme.decode(), target.host.decode()
    port = target.port or (443 if scheme == "https" else 80)
    path = target.target.decode().partition("?")[0]
    return {"http.request.method": "POST", "server.address": host, "server.port": port,
            "url.full": f"{scheme}://{host}:{port}{path}"}


def _header_text(value: str) -> str:
    """Header values must be ASCII: anything else is percent-encoded (UTF-8)."""
    return value if value.isascii() else quote(value, safe="")


def _iso(ms: int) -> str:
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"
