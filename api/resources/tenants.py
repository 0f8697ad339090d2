"""Operator endpoints: tenants."""

from __future__ import annotations

from typing import Any

from flask.views import MethodView
from marshmallow import Schema, fields, validate
from sqlalchemy import select

from api.auth import operator_access
from api.context import scope, services
from api.fields import TENANT_NAME_PATTERN, Timestamp, strict_int
from api.openapi import raises
from api.pagination import PageArgs, page_of, paginate
from api.parsing import Blueprint
from api.services.tenants import find_tenant, set_quotas
from models import Tenant
from models.tenancy import create_tenant

PREFIX = "/tenants"
blp = Blueprint("tenants", __name__, description="Tenants (operator token)")


class QuotasSchema(Schema):
    topics = strict_int(0)
    subscriptions = strict_int(0)
    publish_rate = strict_int(0)
    stored_bytes = strict_int(0)


class TenantCreate(Schema):
    name = fields.String(
        required=True,
        validate=validate.Regexp(TENANT_NAME_PATTERN, error="1-63 of a-z 0-9 -, not starting "
                                 "with -"),
    )


class TenantUpdate(Schema):
    quotas = fields.Nested(QuotasSchema, required=True)


class TenantOut(Schema):
    id = fields.String()
    name = fields.String()
    quotas = fields.Dict()
    created_at = Timestamp()


class TenantCreated(TenantOut):
    admin_key = fields.String()


TenantPage = page_of(TenantOut)


@blp.route("")
class Tenants(MethodView):
    @operator_access
    @blp.arguments(TenantCreate)
    @raises(409)
    @blp.response(201, TenantCreated)
    def post(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create a tenant and its admin key (shown once)."""
        tenant, key = create_tenant(scope().session, body["name"])
        return {"id": tenant.id, "name": tenant.name, "quotas": tenant.quotas,
                "created_at": tenant.created_at, "admin_key": key}

    @operator_access
    @blp.arguments(PageArgs, location="query")
    @blp.response(200, TenantPage)
    def get(self, page: dict[str, Any]) -> dict[str, Any]:
        """List tenants."""
        items, cursor = paginate(scope().session, select(Tenant), Tenant.name, Tenant.id, **page)
        return {"items": items, "next_cursor": cursor}


@blp.route("/<tenant_id>")
class TenantById(MethodView):
    @operator_access
    @blp.response(200, TenantOut)
    def get(self, tenant_id: str) -> Tenant:
        """One tenant."""
        return find_tenant(scope().session, tenant_id)

    @operator_access
    @blp.arguments(TenantUpdate)
    @blp.response(200, TenantOut)
    def put(self, body: dict[str, Any], tenant_id: str) -> Tenant:
        """Set a tenant's quota overrides (0 = unlimited; absent = the settings' default)."""
        return set_quotas(scope().session, services().cache, tenant_id, body["quotas"])
