"""Typed exceptions for the service's error answers.

Every error the service sends has the body
`{"error": {"code", "message", "details"}, "request_id"}`; `error_from_response` turns it
into the `MQError` subclass registered for its `code` (or, for a code this client does not
know, the class of its HTTP status), so callers catch `NotFound` or `QuotaExceeded` rather
than compare strings. Failures with no answer at all (the network) are `NetworkError`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import httpx


class MQError(Exception):
    """Base class of every error this client raises for a failed call.

    `code` is the API's error code, `status` the HTTP status (None when no answer came),
    `details` the error's details (marshmallow's shape for validation errors), `request_id`
    the service's id of the request (quote it when reporting a problem) and `retry_after` the
    seconds of a `Retry-After` header, if any."""

    code: ClassVar[str] = "INTERNAL_ERROR"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 details: dict[str, Any] | None = None, request_id: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code  # type: ignore[misc]  # an unknown code on a known class
        self.status = status
        self.details: dict[str, Any] = details or {}
        self.request_id = request_id
        self.retry_after = retry_after

    def __str__(self) -> str:
        status = f" {self.status}" if self.status is not None else ""
        return f"{self.code}{status}: {self.message}"


class ValidationError(MQError):
    """400: the body is not JSON; 422: fields are invalid (`details` says which)."""

    code = "VALIDATION_ERROR"


class SerializationError(ValidationError):
    code = "SERIALIZATION_ERROR"


class SchemaValidationError(ValidationError):
    code = "SCHEMA_VALIDATION_ERROR"


class Unauthorized(MQError):
    code = "UNAUTHORIZED"


class Forbidden(MQError):
    code = "FORBIDDEN"


class NotFound(MQError):
    code = "NOT_FOUND"


class TopicNotFound(NotFound):
    code = "TOPIC_NOT_FOUND"


class SubscriptionNotFound(NotFound):
    code = "SUBSCRIPTION_NOT_FOUND"


class ScheduleNotFound(NotFound):
    code = "SCHEDULE_NOT_FOUND"


class MessageNotFound(NotFound):
    code = "MESSAGE_NOT_FOUND"


class MethodNotAllowed(MQError):
    code = "METHOD_NOT_ALLOWED"


class Conflict(MQError):
    code = "CONFLICT"


class TopicAlreadyExists(Conflict):
    code = "TOPIC_ALREADY_EXISTS"


class SubscriptionAlreadyExists(Conflict):
    code = "SUBSCRIPTION_ALREADY_EXISTS"


class TopicNotActive(Conflict):
    code = "TOPIC_NOT_ACTIVE"


class SchemaIncompatible(Conflict):
    code = "SCHEMA_INCOMPATIBLE"


class PayloadTooLarge(MQError):
    code = "PAYLOAD_TOO_LARGE"


class UnsupportedMediaType(MQError):
    code = "UNSUPPORTED_MEDIA_TYPE"


class QuotaExceeded(MQError):
    """429: a tenant quota or rate limit; `retry_after` says when to try again."""

    code = "QUOTA_EXCEEDED"


class ServiceUnavailable(MQError):
    """503: the service's database or Redis is unreachable."""

    code = "CONNECTION_ERROR"


class BrokerNotAvailable(ServiceUnavailable):
    """503: Redis is unreachable; 422: a backend this edition does not run (kafka)."""

    code = "BROKER_NOT_AVAILABLE"


class InternalError(MQError):
    code = "INTERNAL_ERROR"


class NetworkError(MQError):
    """No answer: the connection failed, timed out or was dropped, on every attempt. The
    underlying httpx exception is the `__cause__`."""

    code = "NETWORK_ERROR"


def _registry() -> dict[str, type[MQError]]:
    classes: list[type[MQError]] = [
        ValidationError, SerializationError, SchemaValidationError, Unauthorized, Forbidden,
        NotFound, TopicNotFound, SubscriptionNotFound, ScheduleNotFound, MessageNotFound,
        MethodNotAllowed, Conflict, TopicAlreadyExists, SubscriptionAlreadyExists,
        TopicNotActive, SchemaIncompatible, PayloadTooLarge, UnsupportedMediaType,
        QuotaExceeded, ServiceUnavailable, BrokerNotAvailable, InternalError]
    return {cls.code: cls for cls in classes}


BY_CODE = _registry()
#: For an answer without a code this client knows (a proxy's page, a newer service's code).
BY_STATUS: dict[int, type[MQError]] = {
    400: ValidationError, 401: Unauthorized, 403: Forbidden, 404: NotFound,
    405: MethodNotAllowed, 409: Conflict, 413: PayloadTooLarge, 415: UnsupportedMediaType,
    422: ValidationError, 429: QuotaExceeded, 503: ServiceUnavailable}


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The `Retry-After` header in seconds (delta-seconds or an HTTP date), or None."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def error_from_response(response: httpx.Response) -> MQError:
    """The typed exception for an error answer."""
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {"message": response.text[:500] or response.reason_phrase}
    code = error.get("code") if isinstance(error.get("code"), str) else None
    cls = BY_CODE.get(code or "") or BY_STATUS.get(response.status_code)
    if cls is None:
        cls = InternalError if response.status_code >= 500 else MQError
    details = error.get("details")
    return cls(str(error.get("message") or response.reason_phrase), code=code,
               status=response.status_code,
               details=details if isinstance(details, dict) else None,
               request_id=body.get("request_id") if isinstance(body, dict) else None,
               retry_after=retry_after_seconds(response))
