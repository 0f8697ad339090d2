"""Health and status (no authentication)."""

from __future__ import annotations

import time
from typing import Any

from flask import current_app
from flask.views import MethodView
from marshmallow import Schema, fields

from api.context import services
from api.parsing import Blueprint
from api.services.health import health, live_process_view
from mq import __version__

PREFIX = ""
blp = Blueprint("monitoring", __name__, description="Health and status")
#: Overrides the API's bearer security (`api.create_app`): anyone may ask.
NO_AUTH: list[dict[str, list[str]]] = []


class CheckOut(Schema):
    status = fields.String()
    details = fields.Dict()


class HealthOut(Schema):
    status = fields.String()
    checks = fields.Dict(keys=fields.String(), values=fields.Nested(CheckOut))


class StatusOut(Schema):
    version = fields.String()
    edition = fields.String()
    uptime_s = fields.Float()
    backends = fields.Dict()
    processes = fields.Dict()


@blp.route("/health")
class Health(MethodView):
    @blp.response(200, HealthOut)
    @blp.doc(security=NO_AUTH)
    @blp.alt_response(503, schema=HealthOut, description="Redis or the database is down")
    def get(self) -> tuple[dict[str, Any], int]:
        """Redis and database checks; 503 when either is down."""
        answer = health(services())
        return answer, 200 if answer["status"] == "healthy" else 503


@blp.route("/status")
class Status(MethodView):
    @blp.response(200, StatusOut)
    @blp.doc(security=NO_AUTH)
    def get(self) -> dict[str, Any]:
        """Version, backends and the live worker and scheduler processes."""
        return {
            "version": __version__,
            "edition": "standard",
            "uptime_s": round(time.time() - current_app.config["MQ_STARTED_AT"], 3),
            "backends": {"redis_stream": True, "kafka": False},
            "processes": live_process_view(services()),
        }
