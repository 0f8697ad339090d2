"""SQLAlchemy 2.0 models of the metadata database, its session factory and migrations."""

from models.base import Base
from models.database import Database, upgrade
from models.messages import ConsumptionRecord, IdempotencyKey, MessageRecord
from models.registry import Schedule, Schema
from models.tenancy import ApiKey, Tenant
from models.topics import Subscription, Topic

__all__ = [
    "ApiKey",
    "Base",
    "ConsumptionRecord",
    "Database",
    "IdempotencyKey",
    "MessageRecord",
    "Schedule",
    "Schema",
    "Subscription",
    "Tenant",
    "Topic",
    "upgrade",
]
