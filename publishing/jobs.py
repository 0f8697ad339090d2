"""A publish job (the publishes of one request), its answer, and how a failure becomes the
error the API answers with."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime

from redis.exceptions import RedisError
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from mq.errors import BrokerNotAvailable, DatabaseUnavailable, MQError
from publishing import records
from publishing.messages import Prepared

StreamRef = tuple[str, int]  # (topic id, partition)
MessageKey = tuple[str, str]  # (tenant id, message id)


@dataclass(frozen=True)
class Published:
    """The answer for one message: its ids, where it went, and whether it was a duplicate
    (then everything but `duplicate` is the original's)."""

    message_id: str
    topic_name: str
    partition: int
    offset: str | None
    published_at: datetime
    status: str
    scheduled_at: datetime | None
    duplicate: bool


@dataclass
class Job:
    """The publishes of one request: messages of one topic, stored all or none, in order."""

    topic_name: str
    items: list[Prepared]
    #: The cache epoch the caller's checks (key, topic, quotas) trusted without reading it;
    #: the group reads the current one before writing (`StaleEpoch` if it moved on).
    epoch: str | None = None
    future: Future[list[Published]] = field(default_factory=Future)

    def resolve(self, answer: list[Published] | BaseException) -> None:
        if isinstance(answer, BaseException):
            self.future.set_exception(answer)
        else:
            self.future.set_result(answer)


class StaleEpoch(MQError):
    """The caller's checks trusted a cache epoch that is no longer current: nothing was
    written; check again under `epoch` (None: Redis could not be read) and publish again."""

    def __init__(self, epoch: str | None) -> None:
        super().__init__("cached look-ups were stale; publish again")
        self.epoch = epoch


def first_of_each_message(jobs: Sequence[Job]) -> dict[MessageKey, tuple[Job, Prepared]]:
    """The first item of each (tenant, message id) in group order, with its job: the one
    stored; later ones are duplicates of it."""
    first: dict[MessageKey, tuple[Job, Prepared]] = {}
    for job in jobs:
        for item in job.items:
            first.setdefault((item.row["tenant_id"], item.message_id), (job, item))
    return first


def new_answer(item: Prepared, topic_name: str, offset: str | None, *,
               duplicate: bool) -> Published:
    row = item.row
    return Published(item.message_id, topic_name, item.partition, offset,
                     row["published_at"], row["status"], row.get("scheduled_at"), duplicate)


def stored_answer(original: records.StoredRecord, offset: str | None) -> Published:
    return Published(original.message_id, original.topic_name, original.partition,
                     original.offset or offset, original.published_at, original.status,
                     original.scheduled_at, duplicate=True)


def unavailable(failure: BaseException | None) -> BaseException:
    return as_service_error(failure or RedisError("the message broker refused the message"))


def as_service_error(exc: BaseException) -> BaseException:
    """Errors the API maps to its error body: MQErrors and the stores' unavailability."""
    if isinstance(exc, MQError):
        return exc
    if isinstance(exc, RedisError):
        return BrokerNotAvailable("the message broker is unreachable")
    if isinstance(exc, SQLAlchemyError):
        return DatabaseUnavailable("the metadata database is unreachable")
    return exc


def is_bad_data(exc: DBAPIError) -> bool:
    """A value the database refuses (SQLSTATE class 22, data exception)."""
    code = getattr(exc.orig, "pgcode", None) or ""
    return code.startswith("22")
