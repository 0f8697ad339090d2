"""Stores for benchmarks that run the app in-process: a fresh, migrated PostgreSQL database
and a fresh Redis namespace, both removed afterwards.

Environment: `BENCH_DATABASE_URL` (an admin URL of a PostgreSQL server, default local),
`BENCH_REDIS_URL` (default local).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from redis import Redis

from models import upgrade
from models.database import temporary_database
from mq.settings import Settings

ADMIN_URL = os.environ.get("BENCH_DATABASE_URL",
                           "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
OPERATOR = "bench-operator-token"


@contextmanager
def fresh_settings(**overrides: Any) -> Iterator[Settings]:
    """Settings on a new database and namespace (operator token `OPERATOR`, quiet logs)."""
    namespace = f"mqbench{uuid.uuid4().hex[:8]}"
    with temporary_database(ADMIN_URL, "mqbench") as db_url:
        upgrade(db_url)
        try:
            yield Settings(database_url=db_url, redis_url=REDIS_URL, redis_namespace=namespace,
                           mq_operator_token=OPERATOR, log_format="text", log_level="WARNING",
                           **overrides)
        finally:
            redis = Redis.from_url(REDIS_URL)
            for key in redis.scan_iter(f"{namespace}:*", count=1000):
                redis.delete(key)
