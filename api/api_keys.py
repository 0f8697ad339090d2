"""Tenant admins manage their tenant's API keys."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import Schema, fields, validate
from sqlalchemy import select

from api.auth import ROLES, principal, tenant_access
from api.fields import NAME_PATTERN, Timestamp
from api.pagination import PageArgs, paginate
from api.parsing import Blueprint
from api.services import services
from models import ApiKey
from models.tenancy import add_api_key
from mq.errors import NotFound

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


class ApiKeyPage(Schema):
    items = fields.List(fields.Nested(ApiKeyOut))
    next_cursor = fields.String(allow_none=True)


@blp.route("")
class ApiKeys(MethodView):
    @tenant_access("admin")
    @blp.arguments(ApiKeyCreate)
    @blp.response(201, ApiKeyCreated)
    @blp.doc(security=[{"bearer": []}])
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create a key; the key itself is in this answer only."""
        session = services().db_session()
        row, key = add_api_key(session, principal().tenant_id, body["name"], body["role"])
        session.commit()
        return {"id": row.id, "name": row.name, "role": row.role, "key_prefix": row.key_prefix,
                "created_at": row.created_at, "last_used_at": None, "key": key}

    @tenant_access("admin")
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, ApiKeyPage)
    @blp.doc(security=[{"bearer": []}])
    def get(self, page: dict[str, Any]) -> dict[str, Any]:
        """List keys (never the keys themselves)."""
        stmt = select(ApiKey).where(ApiKey.tenant_id == principal().tenant_id)
        items, cursor = paginate(services().db_session(), stmt, ApiKey.created_at, ApiKey.id,
                                 **page)
        return {"items": items, "next_cursor": cursor}


@blp.route("/<key_id>")
class ApiKeyById(MethodView):
    @tenant_access("admin")
    @blp.response(204)
    @blp.doc(security=[{"bearer": []}])
    def delete(self, key_id: str) -> None:
        """Revoke a key: it answers 401 from now on."""
        session = services().db_session()
        row = session.scalar(
            select(ApiKey).where(ApiKey.id == key_id, ApiKey.tenant_id == principal().tenant_id)
        )
        if row is None:
            raise NotFound(f"API key '{key_id}' does not exist")
        session.delete(row)
        session.commit()
        services().cache.invalidate()
