"""The HTTP API: the Flask app factory.

Layout: `api.resources` (one blueprint per resource: parse, call, serialise) over
`api.services` (look-ups, permission checks, validation, calls into the broker and the
publishing core; handed their dependencies). At the edge: `api.context` (the process's
`Services` and the request's `Scope`), `api.auth` (the caller), `api.errors` (every failure
as the contract's error body), `api.bodies` and `api.parsing` (request bodies),
`api.fast_path` (publishes answered without Flask's dispatch) and `api.instrumentation`.
`api.dashboard` is the web dashboard over the same services.
"""

from __future__ import annotations

import logging
import random
import re
import sys
import time
from collections.abc import Callable
from functools import cached_property
from inspect import iscoroutinefunction
from typing import Any

from flask import Flask, Response, g, has_app_context, request

from api import gunicorn_errors, instrumentation, openapi
from api.bodies import check_request_body
from api.cache import EpochCache
from api.context import close_request_scope
from api.dashboard import register_dashboard
from api.dependencies import Services
from api.errors import MQApi, register_error_handlers
from api.fast_path import PublishFastPath
from api.resources import register_blueprints
from broker.connection import RedisClient, connect
from broker.keys import Keys
from broker.streams import TopicStreams
from models import Database
from mq import __version__
from mq.logging import configure_logging
from mq.settings import Settings
from mq.tracing import Tracing, incoming
from publishing.group import Publisher
from publishing.writer import GroupWriter

BASE = "/api/v1/mq"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class MQFlask(Flask):
    """Flask, remembering which views and hooks are coroutines: it asks for each of them on
    every request, and the answer (`inspect`) was a measurable part of a publish."""

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        key = getattr(func, "__func__", func)
        is_async = self._coroutines.get(key)
        if is_async is None:
            is_async = self._coroutines[key] = iscoroutinefunction(func)
        return self.async_to_sync(func) if is_async else func

    @cached_property
    def _coroutines(self) -> dict[Any, bool]:
        return {}


def create_app(
    settings: Settings | None = None,
    *,
    database: Database | None = None,
    redis: RedisClient | None = None,
    tracing: Tracing | None = None,
) -> Flask:
    """Build the API application. Nothing connects until the first request needs it.
    Built from the environment — as gunicorn does with `api:create_app()` — it also sets up
    the process's logging, as every other entry point does (`mq.logging`), and, under
    gunicorn, the error body for the requests gunicorn refuses itself (`api.gunicorn_errors`)."""
    if settings is None:
        settings = Settings.from_env()
        configure_logging(settings, "api")
        for handler in logging.getLogger().handlers:
            handler.addFilter(_with_request_id)
        if "gunicorn" in sys.modules:
            gunicorn_errors.install()
    app = MQFlask("mq")
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        API_TITLE="Message queue service",
        API_VERSION=__version__,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="/docs",
        OPENAPI_SWAGGER_UI_URL="https://cdn.jsdelivr.net/npm/swagger-ui-dist/",
        # Every operation needs the bearer token unless it says otherwise (`security=[]`).
        API_SPEC_OPTIONS={
            "security": [{"bearer": []}],
            "components": {"securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "API key or operator token"}}},
        },
        JSON_SORT_KEYS=False,
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    keys = Keys.of(settings)
    redis = redis if redis is not None else connect(settings, max_connections=32)
    database = database or Database(settings.database_url)
    streams = TopicStreams(redis, keys, max_len=settings.stream_max_len)
    publisher = Publisher.build(database.engine, redis, keys, stream_cap=settings.stream_max_len,
                                wait_replicas=settings.redis_wait_replicas,
                                wait_timeout_ms=settings.redis_wait_timeout_ms)
    app.extensions["mq"] = Services(
        settings=settings,
        database=database,
        redis=redis,
        keys=keys,
        streams=streams,
        cache=EpochCache(redis, keys.cache_epoch),
        writer=GroupWriter(publisher),
        tracing=tracing if tracing is not None else Tracing.configure(settings, "mq-api"),
    )
    app.config["MQ_STARTED_AT"] = time.time()

    api = MQApi(app, spec_kwargs={"servers": [{"url": "/"}]})
    openapi.document(api)
    register_blueprints(api, BASE)
    openapi.finish(api)
    register_dashboard(app, settings)
    instrumentation.install(app)
    register_error_handlers(app)
    app.before_request(_start_request)
    app.before_request(check_request_body)
    app.after_request(_tag_response)
    app.teardown_appcontext(close_request_scope)
    app.wsgi_app = PublishFastPath(app, BASE, request_id)  # type: ignore[method-assign]
    return app


def _with_request_id(record: logging.LogRecord) -> bool:
    """Log lines written while a request is served carry its request id."""
    if getattr(record, "request_id", None) is None and has_app_context():
        record.request_id = g.get("request_id")
    return True


def _start_request() -> None:
    g.request_id = request_id(request.headers.get("X-Request-Id", ""))
    g.trace = incoming(request.environ)


def request_id(supplied: str) -> str:
    """The request's id: the client's `X-Request-Id` if it is a sane one, else a new one."""
    return supplied if _REQUEST_ID.match(supplied) else f"{random.getrandbits(128):032x}"


def _tag_response(response: Response) -> Response:
    response.headers["X-Request-Id"] = g.get("request_id", "")
    return response
