"""What health and status report: Redis and the database checked, and the live worker and
scheduler processes from their heartbeats. Failures are reported, never raised."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import text

from api.dependencies import Services
from broker.connection import RedisClient
from broker.heartbeats import live_processes
from models import Database

WORKER_FIELDS = ("id", "host", "pid", "last_heartbeat", "subscriptions")
SCHEDULER_FIELDS = ("id", "host", "pid", "last_heartbeat", "leader")


def health(svc: Services) -> dict[str, Any]:
    """Redis and database checks; `status` is `unhealthy` when either is down."""
    checks = {"redis": _check_redis(svc.redis), "database": _check_database(svc.database)}
    healthy = all(c["status"] == "healthy" for c in checks.values())
    return {"status": "healthy" if healthy else "unhealthy", "checks": checks}


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


def live_process_view(svc: Services) -> dict[str, Any]:
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
