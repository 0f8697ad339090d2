"""The machine's ceiling for a publish: a bare Flask endpoint doing one INSERT and one XADD.

Served by gunicorn exactly like the real API (the Procfile's `web` line with this app
instead of `api:create_app()`), so `bench/publish.py` can put the service's figures next to
what the same machine does with no framework, validation, auth or bookkeeping at all.
"""

from __future__ import annotations

import json
import os
import uuid

import psycopg2.pool
from flask import Flask, Response, request
from redis import Redis

TABLE = "bench_ceiling"
#: At least the request threads of one gunicorn worker (the Procfile's `--threads`).
THREADS = 8


def create_app() -> Flask:
    app = Flask("ceiling")
    # A benchmark fixture, not service code: it reads its two URLs straight from the
    # environment that bench/publish.py sets.
    # minconn = maxconn: psycopg2's pool closes every connection returned beyond `minconn`,
    # so a smaller minconn would open a new PostgreSQL connection for most requests.
    pool = psycopg2.pool.ThreadedConnectionPool(THREADS, THREADS, os.environ["DATABASE_URL"])
    redis = Redis.from_url(os.environ["REDIS_URL"])
    stream = os.environ.get("CEILING_STREAM", "bench:ceiling")

    @app.post("/publish")
    def publish() -> Response:
        body = request.get_json()
        message_id = str(uuid.uuid4())
        payload = json.dumps(body.get("payload"))
        connection = pool.getconn()
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"INSERT INTO {TABLE} (message_id, payload) VALUES (%s, %s)",
                               (message_id, payload))
            connection.commit()
        finally:
            pool.putconn(connection)
        offset = redis.xadd(stream, {"m": payload}, maxlen=1_000_000, approximate=True)
        return Response(json.dumps({"message_id": message_id, "offset": offset.decode()}),
                        status=201, mimetype="application/json")

    return app
