"""The one place where failures become the docs/api.md error body.

`{"error": {"code", "message", "details"}, "request_id"}` for every error: service errors
(`mq.errors`), HTTP errors raised by Flask/werkzeug/webargs (unknown path, 405, 413, invalid
JSON, validation), an unreachable database or Redis, and anything unexpected (500, logged
with its stack trace, never shown to the client).
"""

from __future__ import annotations

import logging
from typing import Any

import redis.exceptions
import sqlalchemy.exc
from flask import Flask, Response, g, jsonify
from flask_smorest import Api
from marshmallow import Schema, fields
from werkzeug.exceptions import HTTPException

from mq import errors

log = logging.getLogger(__name__)

#: werkzeug's HTTP errors by status, as service errors.
HTTP_ERRORS: dict[int, type[errors.MQError]] = {
    400: errors.InvalidJSON,
    401: errors.Unauthorized,
    403: errors.Forbidden,
    404: errors.NotFound,
    405: errors.MethodNotAllowed,
    409: errors.Conflict,
    413: errors.PayloadTooLarge,
    415: errors.UnsupportedMediaType,
    422: errors.ValidationError,
    429: errors.QuotaExceeded,
}

HTTP_MESSAGES = {
    400: "the request body is not valid JSON",
    404: "no such resource",
    405: "method not allowed on this resource",
    413: "the request body is larger than the server accepts",
    414: "the request URL is longer than the server accepts",
    422: "the request is invalid",
    431: "the request's header fields are larger than the server accepts",
}


class URITooLong(errors.MQError):
    """A request line over the server's limit (raised by werkzeug, never by the service)."""

    code = "URI_TOO_LONG"
    status = 414


class HeadersTooLarge(errors.MQError):
    """Request header fields over the server's limit (raised by werkzeug, never by the
    service)."""

    code = "HEADER_FIELDS_TOO_LARGE"
    status = 431


HTTP_ERRORS.update({414: URITooLong, 431: HeadersTooLarge})


class ErrorDetail(Schema):
    code = fields.String(required=True, metadata={"example": "TOPIC_NOT_FOUND"})
    message = fields.String(required=True)
    details = fields.Dict(required=True, metadata={
        "description": "field -> messages, nested objects as nested dicts"})


class ErrorBody(Schema):
    """The contract's error body; what every error answers (`error_response`)."""

    error = fields.Nested(ErrorDetail, required=True)
    request_id = fields.String(required=True)


def error_response(error: errors.MQError) -> Response:
    body = {
        "error": {"code": error.code, "message": error.message, "details": error.details},
        "request_id": g.get("request_id"),
    }
    response = jsonify(body)
    response.status_code = error.status
    response.headers.update(error.headers)
    return response


def from_http_exception(exc: HTTPException) -> errors.MQError:
    """Translate a werkzeug/webargs HTTP error, keeping webargs' validation messages."""
    status = exc.code or 500
    kind = HTTP_ERRORS.get(status, errors.MQError)
    details: dict[str, Any] = {}
    data = getattr(exc, "data", None) or {}
    messages = data.get("messages") if isinstance(data, dict) else None
    if isinstance(messages, dict):
        # webargs groups messages by location ({"json": {...}, "query": {...}}).
        for location_messages in messages.values():
            if isinstance(location_messages, dict):
                details.update(location_messages)
    message = HTTP_MESSAGES.get(status) or exc.description or "error"
    if status == 422 and not details:
        message = exc.description or message
    allow = getattr(exc, "valid_methods", None)  # a 405 names the methods that are allowed
    error = kind(message, details, headers={"Allow": ", ".join(allow)} if allow else None)
    if status >= 500 and kind is errors.MQError:
        error.message = "internal error"
    return error


class MQApi(Api):
    """flask-smorest's Api with the contract's error body instead of its own, in its answers
    and in the document. Each operation lists its error statuses (`api.openapi`) rather than
    a catch-all `default` response."""

    ERROR_SCHEMA = ErrorBody
    DEFAULT_ERROR_RESPONSE_NAME = None

    def handle_http_exception(self, error: HTTPException) -> Response:
        if error.code and error.code >= 500:
            log.error("server error %s", error.code, exc_info=getattr(error, "original_exception",
                                                                      None))
        return error_response(from_http_exception(error))


def service_error(exc: Exception) -> errors.MQError:
    """The contract's error for any exception raised while serving a request; unreachable
    stores are logged as warnings, anything unexpected with its stack trace."""
    if isinstance(exc, errors.MQError):
        return exc
    if isinstance(exc, HTTPException):
        return from_http_exception(exc)
    if isinstance(exc, _DATABASE_DOWN):
        log.warning("metadata database unreachable: %s", type(exc).__name__)
        return errors.DatabaseUnavailable("the metadata database is unreachable")
    if isinstance(exc, _REDIS_DOWN):
        log.warning("redis unreachable: %s", type(exc).__name__)
        return errors.BrokerNotAvailable("the message broker is unreachable")
    log.error("unhandled error", exc_info=exc)
    return errors.MQError("internal error")


_DATABASE_DOWN = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
                  sqlalchemy.exc.TimeoutError)
_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(Exception, lambda exc: error_response(service_error(exc)))
