"""Tenant admins manage their tenant's API keys."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import Schema, fields, validate

from api.auth import ROLES, principal, tenant_access
from api.context import scope, services
from api.fields import NAME_PATTERN, Timestamp
from api.openapi import raises
from api.pagination import PageArgs, page_of, paginate
from api.parsing import Blueprint
from api.services.tenants import api_keys_query, create_api_key, revoke_api_key
from models import ApiKey

PREFIX = "/api-keys"
blp = Blueprint("api-keys", __name__, description="API keys of the caller's tenant (admin)")


class ApiKeyCreate(Schema):
    name = fields.String(required=True, validate=validate.Regexp(NAME_PATTERN))
    role = fields.String(required=True, validate=validate.OneOf(ROLES))


class ApiKeyOut(Schema):
    id = fields.String()
    name = fields.String()
    role = fields.String()
    key_prefix = fields.String()
    created_at = Timestamp()
    last_used_at = Timestamp(allow_none=True)


class ApiKeyCreated(ApiKeyOut):
    key = fields.String()


ApiKeyPage = page_of(ApiKeyOut)


@blp.route("")
class ApiKeys(MethodView):
    @tenant_access("admin")
    @blp.arguments(ApiKeyCreate)
    @raises(409)
    @blp.response(201, ApiKeyCreated)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create a key; the key itself is in this answer only."""
        return create_api_key(scope().session, principal().tenant_id, body["name"],
                              body["role"])

    @tenant_access("admin")
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, ApiKeyPage)
    def get(self, page: dict[str, Any]) -> dict[str, Any]:
        """List keys (never the keys themselves)."""
        stmt = api_keys_query(principal().tenant_id)
        items, cursor = paginate(scope().session, stmt, ApiKey.created_at, ApiKey.id, **page)
        return {"items": items, "next_cursor": cursor}


@blp.route("/<key_id>")
class ApiKeyById(MethodView):
    @tenant_access("admin")
    @blp.response(204)
    def delete(self, key_id: str) -> None:
        """Revoke a key: it answers 401 from now on."""
        revoke_api_key(scope().session, services().cache, principal().tenant_id, key_id)
