"""The schema registry: registering versions of a tenant's subjects, checking references to
them, and checking payloads against the schema a topic is bound to (`schema_definition`
inline, or `schema_subject` = `"subject"` for the latest version at publish time or
`"subject:3"` for a fixed one)."""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.cache import EpochCache
from api.dependencies import Scope
from formats.avro import avro_schema_of
from formats.codec import Codec
from formats.json_schema import SchemaDefinitionError
from formats.schema_registry import (
    PayloadCheck,
    check_definition,
    incompatibilities,
    payload_checker,
)
from models import Schema
from models.registry import find_schema, latest_schema, referenced_schema, version_number
from mq.errors import Conflict, NotFound, SchemaIncompatible, SchemaValidationError
from mq.errors import ValidationError as InvalidRequest

CHECKER_CACHE_SIZE = 512


def register_version(session: Session, cache: EpochCache, tenant_id: str,
                     body: dict[str, Any]) -> tuple[Schema, bool]:
    """Register `body` as the next version of its subject: `(row, created)`; an unchanged
    definition answers the latest version, not created."""
    try:
        check_definition(body["format"], body["definition"])
    except SchemaDefinitionError as exc:
        raise InvalidRequest(str(exc), {"definition": [str(exc)]}) from None
    latest = latest_schema(session, tenant_id, body["subject"])
    if latest is not None and latest.format == body["format"] \
            and _same(latest.definition, body["definition"]):
        return latest, False
    if latest is not None:
        _check_compatible(latest, body)
    row = Schema(tenant_id=tenant_id, subject=body["subject"],
                 version=latest.version + 1 if latest else 1, format=body["format"],
                 definition=body["definition"], compatibility=body["compatibility"])
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"another version of '{body['subject']}' was registered at the same "
                       "time; retry the request") from None
    cache.invalidate()  # cached topics bound to the subject see the new version
    return row, True


def latest_versions_query(tenant_id: str) -> Select[Schema]:
    """The latest version of each of the tenant's subjects."""
    latest = (select(Schema.subject, func.max(Schema.version).label("version"))
              .where(Schema.tenant_id == tenant_id).group_by(Schema.subject).subquery())
    return select(Schema).join(latest, (Schema.subject == latest.c.subject)
                               & (Schema.version == latest.c.version)) \
        .where(Schema.tenant_id == tenant_id)


def subject_versions(session: Session, tenant_id: str, subject: str) -> list[int]:
    """The subject's version numbers, oldest first (`NotFound` for an unknown subject)."""
    versions = session.scalars(
        select(Schema.version).where(Schema.tenant_id == tenant_id,
                                     Schema.subject == subject).order_by(Schema.version)).all()
    if not versions:
        raise NotFound(f"schema subject '{subject[:255]}' does not exist")
    return list(versions)


def schema_version(session: Session, tenant_id: str, subject: str, version: str) -> Schema:
    """One version of a subject, `version` being its number or `latest`."""
    number = None if version == "latest" else version_number(version)
    row = None if version != "latest" and number is None \
        else find_schema(session, tenant_id, subject, number)
    if row is None:
        raise NotFound(f"schema '{subject}' has no version '{version[:20]}'")
    return row


def schema_by_id(session: Session, tenant_id: str, schema_id: str) -> Schema:
    row = session.scalar(
        select(Schema).where(Schema.id == schema_id, Schema.tenant_id == tenant_id))
    if row is None:
        raise NotFound(f"schema '{schema_id[:100]}' does not exist")
    return row


def check_subject_reference(session: Session, tenant_id: str, reference: str) -> None:
    """Raise a 422 unless `reference` names an existing subject (and version) of the tenant."""
    if referenced_schema(session, tenant_id, reference) is None:
        problem = "not a registered subject (\"subject\" or \"subject:version\")"
        raise InvalidRequest(f"schema_subject '{reference[:255]}' is not registered",
                             {"schema_subject": [problem]})


# --- publish-time validation ------------------------------------------------------------------


class SchemaBound(Protocol):
    """What payload validation reads of a topic."""

    @property
    def tenant_id(self) -> str: ...

    @property
    def schema_subject(self) -> str | None: ...

    @property
    def schema_definition(self) -> Any: ...


_checkers: OrderedDict[str, PayloadCheck] = OrderedDict()


def validate_payload(here: Scope, topic: SchemaBound, payload: Any, index: int | None) -> None:
    """Raise `SchemaValidationError` (422) when the topic has a schema that `payload` breaks.
    `index` is the message's place in a batch (None for a single message)."""
    check = _topic_checker(here, topic)
    if check is None:
        return
    problem = check(payload)
    if problem is None:
        return
    details: dict[str, Any] = {"payload": [problem.message]}
    if index is not None:
        details = {"messages": {str(index): details}}
    raise SchemaValidationError(f"payload does not match the topic's schema: {problem.message}",
                                details)


def _topic_checker(here: Scope, topic: SchemaBound) -> PayloadCheck | None:
    if topic.schema_definition is not None:
        # An Avro topic's inline definition is its Avro schema; any other is a JSON Schema.
        codec: Codec | None = getattr(topic, "codec", None)
        is_avro = codec is not None and codec.message_format == "avro" \
            and avro_schema_of(topic.schema_definition) is not None
        fmt = "avro" if is_avro else "json"
        key = f"inline-{fmt}:" + json.dumps(topic.schema_definition, sort_keys=True)
        return _cached(key, lambda: payload_checker(fmt, topic.schema_definition))
    if not topic.schema_subject:
        return None
    row = referenced_schema(here.session, topic.tenant_id, topic.schema_subject)
    if row is None:  # the subject was named when the topic was saved; refuse rather than skip
        raise SchemaValidationError(
            f"the topic's schema subject '{topic.schema_subject}' is not registered",
            {"payload": ["the topic's schema subject is not registered"]})
    return _cached(row.id, lambda: payload_checker(row.format, row.definition))


def _cached(key: str, build: Callable[[], PayloadCheck]) -> PayloadCheck:
    """Compiled checkers per schema id (schema versions never change), least recently used
    dropped first."""
    check = _checkers.get(key)
    if check is None:
        check = _checkers[key] = build()
        if len(_checkers) > CHECKER_CACHE_SIZE:
            _checkers.popitem(last=False)
    else:
        _checkers.move_to_end(key)
    return check


# --- compatibility ----------------------------------------------------------------------------


def _same(stored: Any, given: Any) -> bool:
    return json.dumps(stored, sort_keys=True) == json.dumps(given, sort_keys=True)


def _check_compatible(latest: Schema, body: dict[str, Any]) -> None:
    mode = body["compatibility"]
    if latest.format != body["format"]:
        problems = [] if mode == "NONE" else [
            f"format {body['format']} differs from the subject's {latest.format}"]
    else:
        try:
            problems = incompatibilities(body["format"], mode, latest.definition,
                                         body["definition"])
        except SchemaDefinitionError as exc:
            raise InvalidRequest(str(exc), {"definition": [str(exc)]}) from None
    if problems:
        raise SchemaIncompatible(
            f"version {latest.version + 1} of '{latest.subject}' breaks {mode} compatibility: "
            f"{problems[0]}", {"definition": problems[:50]})
