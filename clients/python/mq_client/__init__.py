"""Python client of the mq message queue service.

    from mq_client import Client

    with Client("http://127.0.0.1:3010", api_key) as client:
        client.publish("orders", {"order_id": 1001})
        with client.batch_publisher("orders") as publisher:
            futures = [publisher.publish({"n": n}) for n in range(10_000)]

`AsyncClient` is the asyncio twin. Every failure is an `MQError` subclass carrying the API's
error code.
"""

from mq_client._batching import DEFAULT_MAX_BYTES, MAX_MESSAGES
from mq_client.aio import AsyncBatchPublisher, AsyncClient
from mq_client.batch import BatchPublisher
from mq_client.client import Client
from mq_client.errors import (
    BrokerNotAvailable,
    Conflict,
    Forbidden,
    InternalError,
    MessageNotFound,
    MethodNotAllowed,
    MQError,
    NetworkError,
    NotFound,
    PayloadTooLarge,
    QuotaExceeded,
    ScheduleNotFound,
    SchemaIncompatible,
    SchemaValidationError,
    SerializationError,
    ServiceUnavailable,
    SubscriptionAlreadyExists,
    SubscriptionNotFound,
    TopicAlreadyExists,
    TopicNotActive,
    TopicNotFound,
    Unauthorized,
    UnsupportedMediaType,
    ValidationError,
)
from mq_client.retry import RetryPolicy

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MAX_MESSAGES",
    "AsyncBatchPublisher",
    "AsyncClient",
    "BatchPublisher",
    "BrokerNotAvailable",
    "Client",
    "Conflict",
    "Forbidden",
    "InternalError",
    "MQError",
    "MessageNotFound",
    "MethodNotAllowed",
    "NetworkError",
    "NotFound",
    "PayloadTooLarge",
    "QuotaExceeded",
    "RetryPolicy",
    "ScheduleNotFound",
    "SchemaIncompatible",
    "SchemaValidationError",
    "SerializationError",
    "ServiceUnavailable",
    "SubscriptionAlreadyExists",
    "SubscriptionNotFound",
    "TopicAlreadyExists",
    "TopicNotActive",
    "TopicNotFound",
    "Unauthorized",
    "UnsupportedMediaType",
    "ValidationError",
]
