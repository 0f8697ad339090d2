"""The service's one error hierarchy.

Every failure a client can see is an `MQError` subclass carrying the API code and HTTP status
of docs/api.md; `api/errors.py` turns any of them into the contract's error body. Code below the API
raises these and never builds HTTP responses itself.
"""

from __future__ import annotations

from typing import Any, ClassVar


class MQError(Exception):
    """Base class: `code` and `status` are the docs/api.md error code and HTTP status."""

    code: ClassVar[str] = "INTERNAL_ERROR"
    status: ClassVar[int] = 500

    def __init__(
        self,
        message: str,
        details: dict[str, Any] | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        self.headers = headers or {}


class ConfigurationError(MQError):
    """A setting is missing or malformed (raised at start-up, never to a client)."""


class ValidationError(MQError):
    code = "VALIDATION_ERROR"
    status = 422


class InvalidJSON(ValidationError):
    status = 400


class Unauthorized(MQError):
    code = "UNAUTHORIZED"
    status = 401


class Forbidden(MQError):
    code = "FORBIDDEN"
    status = 403


class NotFound(MQError):
    code = "NOT_FOUND"
    status = 404


class TopicNotFound(NotFound):
    code = "TOPIC_NOT_FOUND"

    def __init__(self, name: str) -> None:
        super().__init__(f"topic '{name}' does not exist")


class SubscriptionNotFound(NotFound):
    code = "SUBSCRIPTION_NOT_FOUND"

    def __init__(self, subscription_id: str) -> None:
        super().__init__(f"subscription '{subscription_id}' does not exist")


class ScheduleNotFound(NotFound):
    code = "SCHEDULE_NOT_FOUND"

    def __init__(self, schedule_id: str) -> None:
        super().__init__(f"schedule '{schedule_id}' does not exist")


class MessageNotFound(NotFound):
    code = "MESSAGE_NOT_FOUND"

    def __init__(self, message_id: str) -> None:
        super().__init__(f"message '{message_id}' does not exist")


class MethodNotAllowed(MQError):
    code = "METHOD_NOT_ALLOWED"
    status = 405


class Conflict(MQError):
    code = "CONFLICT"
    status = 409


class TopicAlreadyExists(Conflict):
    code = "TOPIC_ALREADY_EXISTS"

    def __init__(self, name: str) -> None:
        super().__init__(f"topic '{name}' already exists")


class SubscriptionAlreadyExists(Conflict):
    code = "SUBSCRIPTION_ALREADY_EXISTS"


class TopicNotActive(Conflict):
    code = "TOPIC_NOT_ACTIVE"

    def __init__(self, name: str, status: str) -> None:
        super().__init__(f"topic '{name}' is {status} and accepts no messages")


class SchemaIncompatible(Conflict):
    code = "SCHEMA_INCOMPATIBLE"


class PayloadTooLarge(MQError):
    code = "PAYLOAD_TOO_LARGE"
    status = 413


class UnsupportedMediaType(MQError):
    code = "UNSUPPORTED_MEDIA_TYPE"
    status = 415


class SerializationError(MQError):
    code = "SERIALIZATION_ERROR"
    status = 400


class SchemaValidationError(MQError):
    code = "SCHEMA_VALIDATION_ERROR"
    status = 422


class QuotaExceeded(MQError):
    code = "QUOTA_EXCEEDED"
    status = 429


class DatabaseUnavailable(MQError):
    """The metadata database is unreachable."""

    code = "CONNECTION_ERROR"
    status = 503


class BrokerNotAvailable(MQError):
    """Redis is unreachable (503), or a backend this edition does not run (422)."""

    code = "BROKER_NOT_AVAILABLE"
    status = 503


class ReplicasBehind(BrokerNotAvailable):
    """A publish reached the Redis primary but not `REDIS_WAIT_REPLICAS` replicas in time: its
    message is stored and may be delivered; the client retries with the same message_id."""


class BackendNotSupported(BrokerNotAvailable):
    status = 422


class FeatureOff(MQError):
    """A part of the service that its settings leave off (the dashboard without
    `MQ_SECRET_KEY`)."""

    code = "NOT_CONFIGURED"
    status = 503
