"""Health and status (no authentication)."""

from __future__ import annotations

import time
from typing import Any

from flask import current_app
from flask.views import MethodView
from marshmallow import Schema, fields
from sqlalchemy import text

from api.context import services
from api.dependencies import Services
from api.parsing import Blueprint
from broker.connection import RedisClient
from broker.heartbeats import live_processes
from models import Database
from mq import __version__

PREFIX = ""
WORKER_FIELDS = ("id", "host", "pid", "last_heartbeat", "subscriptions")
SCHEDULER_FIELDS = ("id", "host", "pid", "last_heartbeat", "leader")
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


def _check_redis(redis: RedisClient) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        redis.ping()
        ping_ms = round((time.perf_counter() - started) * 1000, 3)
        memory = redis.info("memory")
    except Exception as exc:  # any failure means unhealthy, and is reported, not raised
        return {"status": "unhealthy", "details": {"error": type(exc).__name__}}
    return {"status": "healthy", "details": {
        "ping": "PONG", "ping_ms": ping_ms,
        "memory": {"used_bytes": memory.get("used_memory"),
                   "max_bytes": memory.get("maxmemory"),
                   "policy": memory.get("maxmemory_policy")}}}


def _check_database(database: Database) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        with database.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means unhealthy, and is reported, not raised
        return {"status": "unhealthy", "details": {"error": type(exc).__name__}}
    return {"status": "healthy", "details": {
        "backend": database.engine.dialect.name,
        "ping_ms": round((time.perf_counter() - started) * 1000, 3)}}


@blp.route("/health")
class Health(MethodView):
    @blp.response(200, HealthOut)
    @blp.doc(security=NO_AUTH)
    @blp.alt_response(503, schema=HealthOut, description="Redis or the database is down")
    def get(self) -> tuple[dict[str, Any], int]:
        """Redis and database checks; 503 when either is down."""
        svc = services()
        checks = {"redis": _check_redis(svc.redis), "database": _check_database(svc.database)}
        healthy = all(c["status"] == "healthy" for c in checks.values())
        return {"status": "healthy" if healthy else "unhealthy", "checks": checks}, (
            200 if healthy else 503)


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
            "processes": _processes(services()),
        }


def _processes(svc: Services) -> dict[str, Any]:
    """Live processes from their heartbeats (none listed when Redis is unreachable)."""
    try:
        beats = live_processes(svc.redis, svc.keys)
    except Exception:  # status stays answerable without Redis
        return {"workers": [], "scheduler": None}
    workers = [{k: b.get(k) for k in WORKER_FIELDS} for b in beats if b["kind"] == "worker"]
    schedulers = [{k: b.get(k) for k in SCHEDULER_FIELDS} for b in beats
                  if b["kind"] == "scheduler"]
    leader = next((s for s in schedulers if s.get("leader")), None)
    return {"workers": workers, "scheduler": leader or (schedulers[0] if schedulers else None)}
