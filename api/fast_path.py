"""The publish endpoints' fast path: ordinary publishes answered without Flask's dispatch.

Flask's request context, URL routing, before/after hooks and the flask-smorest and webargs
decorators cost a single publish more CPU than its own work in the API process (profiled).
This WSGI middleware answers `POST /api/v1/mq/publish`, `/publish/batch` and
`/topics/<name>/publish` itself when the request is an ordinary one: a JSON body of a size the
app accepts, no query string, and a body the endpoint's schema takes as it is
(`api.parsing.plain`). It runs the views' own functions (`api.resources.publish`) as their
decorators would — same authentication, same cache-epoch handling
(`api.auth.publish_as_caller`) — in an app context, answers with the same body, status and
headers, and counts the same request metrics. Errors are the contract's
(`api.errors.service_error`).

Everything else goes to the Flask app untouched (the body re-wound for it), before anything
was checked or published: bodies marshmallow has to word a refusal for, other media types,
oversized or chunked bodies. The OpenAPI document keeps describing these endpoints from the
views.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, Response, g
from marshmallow import Schema

from api.auth import PRODUCERS, bearer_token, publish_as_caller
from api.bodies import parse_json_body
from api.errors import error_response, service_error
from api.instrumentation import observe_request
from api.parsing import plain
from api.resources import publish
from mq.tracing import incoming

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
#: A route the fast path answers: its rule (the metrics' label), schema and view function.
Route = tuple[str, Schema, Callable[..., Response]]


class PublishFastPath:
    """WSGI middleware in front of the Flask app's own `wsgi_app` (see the module docstring)."""

    def __init__(self, app: Flask, base: str, request_id: Callable[[str], str]) -> None:
        self.app = app
        self.flask: WSGIApp = app.wsgi_app
        self.max_bytes: int | None = app.config.get("MAX_CONTENT_LENGTH")
        self.request_id = request_id
        exact: list[Route] = [(f"{base}/publish", publish.SINGLE, publish.publish_single),
                              (f"{base}/publish/batch", publish.BATCH, publish.publish_batch)]
        self.exact = {route[0]: route for route in exact}  # a path is its own rule
        self.to_topic: Route = (f"{base}/topics/<name>/publish", publish.TO_TOPIC,
                                publish.publish_to_topic)
        self.topic_path = re.compile(rf"^{re.escape(base)}/topics/([^/]+)/publish$")

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]
                 ) -> Iterable[bytes]:
        found = self._route(environ)
        raw = self._body(environ) if found is not None else None
        if found is None or raw is None:
            return self.flask(environ, start_response)
        started = time.perf_counter()
        (rule, schema, view), args = found
        with self.app.app_context():
            g.metrics_started = started
            response = self._answer(environ, raw, schema, lambda body: view(body, *args))
            if response is not None:
                observe_request("POST", rule, response.status_code, started)
        if response is None:
            environ["wsgi.input"] = io.BytesIO(raw)
            return self.flask(environ, start_response)
        return response(environ, start_response)

    def _route(self, environ: dict[str, Any]) -> tuple[Route, tuple[str, ...]] | None:
        if environ.get("REQUEST_METHOD") != "POST" or environ.get("QUERY_STRING") \
                or environ.get("SCRIPT_NAME"):
            return None
        path = environ.get("PATH_INFO", "")
        route = self.exact.get(path)
        if route is not None:
            return route, ()
        match = self.topic_path.match(path)
        if match is None:
            return None
        try:  # WSGI carries the path's bytes as latin-1; names are UTF-8
            name = match.group(1).encode("latin-1").decode("utf-8")
        except UnicodeError:
            return None
        return (self.to_topic, (name,)) if "\x00" not in name else None

    def _body(self, environ: dict[str, Any]) -> bytes | None:
        """The JSON body, read whole, when it is an ordinary one."""
        media_type = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
        if media_type != "application/json" or "HTTP_TRANSFER_ENCODING" in environ:
            return None
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return None
        if length <= 0 or (self.max_bytes is not None and length > self.max_bytes):
            return None
        raw = environ["wsgi.input"].read(length)
        if len(raw) != length:
            environ["wsgi.input"] = io.BytesIO(raw)
            return None
        return raw

    def _answer(self, environ: dict[str, Any], raw: bytes, schema: Schema,
                view: Callable[[Any], Response]) -> Response | None:
        """The answer, or None for the Flask app to give it."""
        g.request_id = self.request_id(environ.get("HTTP_X_REQUEST_ID", ""))
        g.trace = incoming(environ)
        try:
            body = parse_json_body(raw)
            if not plain(schema, body):
                return None
            response = publish_as_caller(bearer_token(environ.get("HTTP_AUTHORIZATION", "")),
                                         PRODUCERS, lambda: view(body))
        except Exception as exc:  # every failure becomes the contract's error
            response = error_response(service_error(exc))
        response.headers["X-Request-Id"] = g.request_id
        return response
