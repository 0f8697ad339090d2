"""Webhook URL checks: where the `http` handler may send requests.

A webhook URL names a host the service will connect to from inside its own network, so
unless the operator allows it (`MQ_WEBHOOK_ALLOW_PRIVATE`), hosts that resolve to loopback,
private, link-local, reserved, shared (CGNAT), multicast or cloud-metadata addresses are
refused. The API checks at subscription time; the delivery checks again as it connects
(`connectable_addresses`, called by the webhook handler's connection pool), because a name may
resolve elsewhere later (DNS rebinding): the name is resolved once, and the address checked is
the address connected to.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

MAX_URL_LENGTH = 2048
SCHEMES = ("http", "https")

#: Names of cloud metadata services, refused even when they do not resolve here.
METADATA_HOSTS = frozenset({
    "metadata", "metadata.google.internal", "metadata.goog", "instance-data",
    "instance-data.ec2.internal",
})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: `(host, port) -> addresses`; the default asks the system resolver.
Resolver = Callable[[str, int], Sequence[str]]


class WebhookURLError(ValueError):
    """The URL is malformed, or leads somewhere webhooks may not go."""


@dataclass(frozen=True)
class WebhookTarget:
    """A checked URL: its parts and the addresses its host resolved to."""

    url: str
    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def parse_webhook_url(url: str) -> SplitResult:
    """Syntax only: an absolute http(s) URL with a host; raises `WebhookURLError`."""
    if not isinstance(url, str) or not url:
        raise WebhookURLError("must be a non-empty URL")
    if len(url) > MAX_URL_LENGTH:
        raise WebhookURLError(f"must be at most {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise WebhookURLError("must not contain whitespace or control characters")
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise WebhookURLError(f"not a valid URL: {exc}") from None
    if parts.scheme.lower() not in SCHEMES:
        raise WebhookURLError("must be an http:// or https:// URL")
    if not parts.hostname:
        raise WebhookURLError("must name a host")
    return parts


def is_forbidden_address(address: str | IPAddress) -> bool:
    """True for any address that is not a public unicast address."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None and is_forbidden_address(embedded):
            return True
    return (
        not ip.is_global
        or ip.is_multicast
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_private
        or ip.is_reserved
        or ip.is_unspecified
    )


def check_webhook_url(
    url: str,
    *,
    allow_private: bool,
    resolver: Resolver | None = system_resolver,
) -> WebhookTarget:
    """Check `url` and resolve its host; raises `WebhookURLError` when it may not be used.

    With `allow_private` only the syntax is checked and nothing is resolved. Otherwise the
    host may not be a metadata or localhost name, and every address it resolves to must be
    public. A name that does not resolve passes: it may be created after the subscription.
    With `resolver=None` nothing is resolved (the connection checks the addresses).
    """
    parts = parse_webhook_url(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".").lower()
    port = parts.port or (443 if scheme == "https" else 80)
    if allow_private:
        return WebhookTarget(url, scheme, host, port, ())
    _check_host_name(host)
    addresses = _resolve(host, port, resolver, required=False) if resolver else []
    _check_addresses(host, addresses)
    return WebhookTarget(url, scheme, host, port, tuple(addresses))


def connectable_addresses(host: str, port: int, *, allow_private: bool,
                          resolver: Resolver = system_resolver) -> list[str]:
    """The addresses to connect to for `host`, all of them checked; `WebhookURLError` if the
    name does not resolve or any address is one webhooks may not reach."""
    host = host.rstrip(".").lower()
    if not allow_private:
        _check_host_name(host)
    addresses = _resolve(host, port, resolver, required=True)
    if not allow_private:
        _check_addresses(host, addresses)
    return addresses


def _check_host_name(host: str) -> None:
    if host in METADATA_HOSTS or host == "localhost" or host.endswith(".localhost"):
        raise WebhookURLError(f"host '{host}' is not allowed for webhooks")


def _check_addresses(host: str, addresses: Sequence[str]) -> None:
    for address in addresses:
        if is_forbidden_address(address):
            where = address if address == host else f"'{host}' resolves to {address}, which"
            raise WebhookURLError(
                f"{where} is a loopback, private, link-local or reserved address, which"
                " webhooks may not reach"
            )


def _resolve(host: str, port: int, resolver: Resolver, *, required: bool) -> list[str]:
    literal = _ip_literal(host)
    if literal is not None:
        return [str(literal)]
    try:
        addresses = [a.split("%", 1)[0] for a in resolver(host, port)]
    except (OSError, UnicodeError) as exc:
        if required:
            raise WebhookURLError(f"host '{host}' does not resolve: {exc}") from None
        return []
    return addresses


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    # Forms the resolver would also accept as an IPv4 address: "2130706433", "0x7f.1", "127.1".
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None
