"""The API's calls, written once for the sync and the async client.

Each call builds a `Request` (method, path under the API base, body, whether sending it again
is safe) and hands it to the client's `_call`, which sends it with retries and turns the
answer into JSON or a typed error (`answer`). `Client._call` returns the JSON; `AsyncClient._call`
is a coroutine returning it. So `Calls` is generic in what a call returns: `Calls[dict, None]`
for the sync client, `Calls[Coroutine[..., dict], Coroutine[..., None]]` for the async one.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx

from mq_client.errors import error_from_response

API_PATH = "/api/v1/mq"
USER_AGENT = "mq-client/0.1.0"

#: What a call answering a JSON object returns (a dict, or an awaitable of one).
Obj = TypeVar("Obj")
#: What a call answering `204` returns (None, or an awaitable of None).
Nothing = TypeVar("Nothing")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    json: Any = None
    content: bytes | None = None
    params: dict[str, Any] | None = None
    #: Sending it again after a network failure cannot do it twice.
    idempotent: bool = False

    def build(self, http: httpx.Client | httpx.AsyncClient) -> httpx.Request:
        headers = {"Content-Type": "application/json"} if self.content is not None else None
        params = {k: v for k, v in (self.params or {}).items() if v is not None}
        return http.build_request(self.method, self.path, json=self.json, content=self.content,
                                  params=params or None, headers=headers)


def answer(response: httpx.Response) -> Any:
    """The JSON of a 2xx answer (None for an empty one); the typed error of any other."""
    if response.is_success:
        return response.json() if response.content else None
    raise error_from_response(response)


def new_message_id() -> str:
    """A client-made id, so that a retried publish is recognised as the same message."""
    return uuid.uuid4().hex


def message(payload: Any, fields: Mapping[str, Any]) -> dict[str, Any]:
    """One message's fields, with a `message_id` unless the caller gave one."""
    out = {"payload": payload, **fields}
    if out.get("message_id") is None:
        out["message_id"] = new_message_id()
    return out


def encode(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def segment(name: str) -> str:
    """`name` as one path segment."""
    return quote(name, safe="")


def page(**params: Any) -> dict[str, Any]:
    return {name: value for name, value in params.items() if value is not None}


class Calls(Generic[Obj, Nothing]):
    """The calls a producer needs, thin: each returns the API's answer as it is."""

    def _call(self, request: Request) -> Any:
        raise NotImplementedError

    # --- publishing -------------------------------------------------------------------------

    def publish(self, topic: str, payload: Any, **fields: Any) -> Obj:
        """Publish one message; `fields` are the API's message fields (`key`, `headers`,
        `message_id`, `correlation_id`, `partition`, `ttl_ms`, ...). Answers
        `{"message_id", "topic", "partition", "offset", "timestamp", "duplicate"}`."""
        body = {"topic": topic, **message(payload, fields)}
        return self._call(Request("POST", "/publish", json=body, idempotent=True))

    def publish_batch(self, topic: str, messages: Iterable[Mapping[str, Any]]) -> Obj:
        """Publish 1-1,000 messages in one request (each a mapping of message fields with a
        `payload`). Answers `{"message_ids", "partitions", "timestamp", "duplicates"}`."""
        batch = [message(m.get("payload"), {k: v for k, v in m.items() if k != "payload"})
                 for m in messages]
        return self._call(Request("POST", f"/topics/{segment(topic)}/publish",
                                  json={"messages": batch}, idempotent=True))

    def get_message(self, message_id: str) -> Obj:
        return self._call(Request("GET", f"/messages/{segment(message_id)}", idempotent=True))

    # --- topics (the API's queues) ----------------------------------------------------------

    def create_topic(self, name: str, **fields: Any) -> Obj:
        return self._call(Request("POST", "/queues", json={"name": name, **fields}))

    def get_topic(self, name: str) -> Obj:
        """The topic with its `stats`."""
        return self._call(Request("GET", f"/queues/{segment(name)}", idempotent=True))

    def list_topics(self, *, status: str | None = None, limit: int | None = None,
                    cursor: str | None = None) -> Obj:
        """One page: `{"items", "next_cursor"}`."""
        return self._call(Request("GET", "/queues", idempotent=True,
                                  params=page(status=status, limit=limit, cursor=cursor)))

    def update_topic(self, name: str, **fields: Any) -> Obj:
        return self._call(Request("PUT", f"/queues/{segment(name)}", json=fields,
                                  idempotent=True))

    def delete_topic(self, name: str) -> Nothing:
        return self._call(Request("DELETE", f"/queues/{segment(name)}", idempotent=True))

    # --- subscriptions ----------------------------------------------------------------------

    def create_subscription(self, topic: str, consumer_group: str, consumer_name: str,
                            **fields: Any) -> Obj:
        body = {"topic": topic, "consumer_group": consumer_group,
                "consumer_name": consumer_name, **fields}
        return self._call(Request("POST", "/subscriptions", json=body))

    def get_subscription(self, subscription_id: str) -> Obj:
        return self._call(Request("GET", f"/subscriptions/{segment(subscription_id)}",
                                  idempotent=True))

    def list_subscriptions(self, *, topic: str | None = None, status: str | None = None,
                           limit: int | None = None, cursor: str | None = None) -> Obj:
        """One page: `{"items", "next_cursor"}`."""
        params = page(topic=topic, status=status, limit=limit, cursor=cursor)
        return self._call(Request("GET", "/subscriptions", params=params, idempotent=True))

    def update_subscription(self, subscription_id: str, **fields: Any) -> Obj:
        return self._call(Request("PUT", f"/subscriptions/{segment(subscription_id)}",
                                  json=fields, idempotent=True))

    def delete_subscription(self, subscription_id: str) -> Nothing:
        return self._call(Request("DELETE", f"/subscriptions/{segment(subscription_id)}",
                                  idempotent=True))

    def pause_subscription(self, subscription_id: str) -> Obj:
        return self._call(Request("POST", f"/subscriptions/{segment(subscription_id)}/pause",
                                  idempotent=True))

    def resume_subscription(self, subscription_id: str) -> Obj:
        return self._call(Request("POST", f"/subscriptions/{segment(subscription_id)}/resume",
                                  idempotent=True))


def http_options(base_url: str, api_key: str, timeout: float,
                 max_connections: int) -> dict[str, Any]:
    """What both clients give their httpx client (`base_url` is the server's root; one that
    already ends with the API's path is taken as it is)."""
    root = base_url.rstrip("/").removesuffix(API_PATH)
    return {"base_url": root + API_PATH, "timeout": timeout,
            "headers": {"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT},
            "limits": httpx.Limits(max_connections=max_connections,
                                   max_keepalive_connections=max_connections)}
