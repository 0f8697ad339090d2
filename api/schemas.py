"""The schema registry: subjects of versioned schemas per tenant, and the payload check of
topics bound to a schema (`schema_definition` inline, or `schema_subject` = `"subject"` for the
latest version at publish time or `"subject:3"` for a fixed one)."""

from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any, Protocol

from flask.views import MethodView
from marshmallow import Schema as Fields
from marshmallow import fields, validate
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.auth import principal, tenant_access
from api.pagination import PageArgs, paginate
from api.parsing import Blueprint
from api.services import services
from formats.avro import avro_schema_of
from formats.json_schema import SchemaDefinitionError
from formats.schema_registry import (
    FORMATS,
    MODES,
    PayloadCheck,
    check_definition,
    incompatibilities,
    payload_checker,
)
from models import Schema
from models.registry import find_schema, latest_schema, referenced_schema, version_number
from mq.errors import Conflict, NotFound, SchemaIncompatible, SchemaValidationError
from mq.errors import ValidationError as InvalidRequest

PREFIX = "/schemas"
blp = Blueprint("schemas", __name__, description="Schema registry (subjects per tenant)")

SUBJECT_PATTERN = r"^[A-Za-z0-9._-]{1,255}(?!\n)$"
CHECKER_CACHE_SIZE = 512


class SchemaCreate(Fields):
    subject = fields.String(required=True, validate=validate.Regexp(SUBJECT_PATTERN))
    format = fields.String(required=True, validate=validate.OneOf(FORMATS))
    definition = fields.Raw(required=True, allow_none=False)
    compatibility = fields.String(load_default="BACKWARD", validate=validate.OneOf(MODES))


class SchemaCreated(Fields):
    id = fields.String()
    subject = fields.String()
    version = fields.Integer()
    format = fields.String()


class SchemaOut(SchemaCreated):
    definition = fields.Raw()
    compatibility = fields.String()


class SubjectOut(SchemaCreated):
    compatibility = fields.String()


class SubjectPage(Fields):
    items = fields.List(fields.Nested(SubjectOut))
    next_cursor = fields.String(allow_none=True)


class VersionsOut(Fields):
    subject = fields.String()
    versions = fields.List(fields.Integer())


@blp.route("")
class Schemas(MethodView):
    @tenant_access("admin")
    @blp.arguments(SchemaCreate)
    @blp.response(201, SchemaCreated)
    @blp.doc(security=[{"bearer": []}])
    def post(self, body: dict[str, Any]) -> Any:
        """Register a version of a subject; an unchanged definition answers the latest (200)."""
        try:
            check_definition(body["format"], body["definition"])
        except SchemaDefinitionError as exc:
            raise InvalidRequest(str(exc), {"definition": [str(exc)]}) from None
        session = services().db_session()
        latest = latest_schema(session, principal().tenant_id, body["subject"])
        if latest is not None and latest.format == body["format"] \
                and _same(latest.definition, body["definition"]):
            return latest, 200
        if latest is not None:
            _check_compatible(latest, body)
        row = Schema(tenant_id=principal().tenant_id, subject=body["subject"],
                     version=latest.version + 1 if latest else 1, format=body["format"],
                     definition=body["definition"], compatibility=body["compatibility"])
        session.add(row)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            raise Conflict(f"another version of '{body['subject']}' was registered at the same "
                           "time; retry the request") from None
        services().cache.invalidate()  # cached topics bound to the subject see the new version
        return row

    @tenant_access()
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, SubjectPage)
    @blp.doc(security=[{"bearer": []}])
    def get(self, page: dict[str, Any]) -> dict[str, Any]:
        """Subjects, by name, each with its latest version."""
        tenant_id = principal().tenant_id
        latest = (select(Schema.subject, func.max(Schema.version).label("version"))
                  .where(Schema.tenant_id == tenant_id).group_by(Schema.subject).subquery())
        stmt = select(Schema).join(latest, (Schema.subject == latest.c.subject)
                                   & (Schema.version == latest.c.version)) \
            .where(Schema.tenant_id == tenant_id)
        items, cursor = paginate(services().db_session(), stmt, Schema.subject, Schema.id, **page)
        return {"items": items, "next_cursor": cursor}


@blp.route("/<subject>/versions")
class SubjectVersions(MethodView):
    @tenant_access()
    @blp.response(200, VersionsOut)
    @blp.doc(security=[{"bearer": []}])
    def get(self, subject: str) -> dict[str, Any]:
        """The subject's version numbers, oldest first."""
        versions = services().db_session().scalars(
            select(Schema.version).where(Schema.tenant_id == principal().tenant_id,
                                         Schema.subject == subject).order_by(Schema.version)).all()
        if not versions:
            raise _subject_not_found(subject)
        return {"subject": subject, "versions": list(versions)}


@blp.route("/<subject>/versions/<version>")
class SubjectVersion(MethodView):
    @tenant_access()
    @blp.response(200, SchemaOut)
    @blp.doc(security=[{"bearer": []}])
    def get(self, subject: str, version: str) -> Schema:
        """One version of a subject; `latest` is the newest."""
        number = None if version == "latest" else version_number(version)
        if version != "latest" and number is None:
            raise NotFound(f"schema '{subject}' has no version '{version[:20]}'")
        row = find_schema(services().db_session(), principal().tenant_id, subject, number)
        if row is None:
            raise NotFound(f"schema '{subject}' has no version '{version[:20]}'")
        return row


@blp.route("/ids/<schema_id>")
class SchemaById(MethodView):
    @tenant_access()
    @blp.response(200, SchemaOut)
    @blp.doc(security=[{"bearer": []}])
    def get(self, schema_id: str) -> Schema:
        """A schema version by its id."""
        row = services().db_session().scalar(
            select(Schema).where(Schema.id == schema_id, Schema.tenant_id == principal().tenant_id))
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
    tenant_id: str
    schema_subject: str | None
    schema_definition: Any


_checkers: OrderedDict[str, PayloadCheck] = OrderedDict()


def validate_payload(topic: SchemaBound, payload: Any, index: int | None) -> None:
    """Raise `SchemaValidationError` (422) when the topic has a schema that `payload` breaks.
    `index` is the message's place in a batch (None for a single message)."""
    check = _topic_checker(topic)
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


def _topic_checker(topic: SchemaBound) -> PayloadCheck | None:
    if topic.schema_definition is not None:
        # An Avro topic's inline definition is its Avro schema; any other is a JSON Schema.
        codec = getattr(topic, "codec", None)
        is_avro = codec is not None and codec.message_format == "avro" \
            and avro_schema_of(topic.schema_definition) is not None
        fmt = "avro" if is_avro else "json"
        key = f"inline-{fmt}:" + json.dumps(topic.schema_definition, sort_keys=True)
        return _cached(key, lambda: payload_checker(fmt, topic.schema_definition))
    if not topic.schema_subject:
        return None
    row = referenced_schema(services().db_session(), topic.tenant_id, topic.schema_subject)
    if row is None:  # the subject was named when the topic was saved; refuse rather than skip
        raise SchemaValidationError(
            f"the topic's schema subject '{topic.schema_subject}' is not registered",
            {"payload": ["the topic's schema subject is not registered"]})
    return _cached(row.id, lambda: payload_checker(row.format, row.definition))


def _cached(key: str, build: Any) -> PayloadCheck:
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


# --- helpers ----------------------------------------------------------------------------------


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


def _subject_not_found(subject: str) -> NotFound:
    return NotFound(f"schema subject '{subject[:255]}' does not exist")
