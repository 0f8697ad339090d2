"""Registered schema definitions by id, for decoding Avro payloads written with a registry
version. Versions never change once registered, so each is read from the database once."""

from __future__ import annotations

import threading
from typing import Any

from models import Database, Schema


class SchemaDefinitions:
    """Callable: schema id -> definition (None if it does not exist)."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._known: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __call__(self, schema_id: str) -> Any:
        with self._lock:
            if schema_id in self._known:
                return self._known[schema_id]
        with self.database.session() as session:
            row = session.get(Schema, schema_id)
            definition = row.definition if row is not None else None
        if definition is not None:
            with self._lock:
                self._known[schema_id] = definition
        return definition
