"""The schema registry: subjects of versioned schemas per tenant (`api.services.registry`
registers them and checks payloads against them)."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import Schema as Fields
from marshmallow import fields, validate

from api.auth import principal, tenant_access
from api.context import scope, services
from api.openapi import raises
from api.pagination import PageArgs, page_of, paginate
from api.parsing import Blueprint
from api.services.registry import (
    latest_versions_query,
    register_version,
    schema_by_id,
    schema_version,
    subject_versions,
)
from formats.schema_registry import FORMATS, MODES
from models import Schema

PREFIX = "/schemas"
blp = Blueprint("schemas", __name__, description="Schema registry (subjects per tenant)")

SUBJECT_PATTERN = r"^[A-Za-z0-9._-]{1,255}(?!\n)$"


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


SubjectPage = page_of(SubjectOut)


class VersionsOut(Fields):
    subject = fields.String()
    versions = fields.List(fields.Integer())


@blp.route("")
class Schemas(MethodView):
    @tenant_access("admin")
    @blp.arguments(SchemaCreate)
    @raises(409)
    @blp.response(201, SchemaCreated)
    @blp.alt_response(200, schema=SchemaCreated,
                      description="the definition is the subject's latest already")
    def post(self, body: dict[str, Any]) -> Schema | tuple[Schema, int]:
        """Register a version of a subject; an unchanged definition answers the latest (200)."""
        row, created = register_version(scope().session, services().cache,
                                        principal().tenant_id, body)
        return row if created else (row, 200)

    @tenant_access()
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, SubjectPage)
    def get(self, page: dict[str, Any]) -> dict[str, Any]:
        """Subjects, by name, each with its latest version."""
        stmt = latest_versions_query(principal().tenant_id)
        items, cursor = paginate(scope().session, stmt, Schema.subject, Schema.id, **page)
        return {"items": items, "next_cursor": cursor}


@blp.route("/<subject>/versions")
class SubjectVersions(MethodView):
    @tenant_access()
    @blp.response(200, VersionsOut)
    def get(self, subject: str) -> dict[str, Any]:
        """The subject's version numbers, oldest first."""
        versions = subject_versions(scope().session, principal().tenant_id, subject)
        return {"subject": subject, "versions": versions}


@blp.route("/<subject>/versions/<version>")
class SubjectVersion(MethodView):
    @tenant_access()
    @blp.response(200, SchemaOut)
    def get(self, subject: str, version: str) -> Schema:
        """One version of a subject; `latest` is the newest."""
        return schema_version(scope().session, principal().tenant_id, subject, version)


@blp.route("/ids/<schema_id>")
class SchemaById(MethodView):
    @tenant_access()
    @blp.response(200, SchemaOut)
    def get(self, schema_id: str) -> Schema:
        """A schema version by its id."""
        return schema_by_id(scope().session, principal().tenant_id, schema_id)
