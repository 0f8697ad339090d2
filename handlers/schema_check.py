"""`handler_config.schema`: a JSON Schema the payload must match before the handler runs.

`checked_schema` vets a schema at subscription time (`SchemaDefinitionError` becomes a 422):
it must be a valid schema of its draft (the latest draft when `$schema` is absent), and its
`$ref`s must stay inside the document, so no delivery ever waits on (or fails at) fetching a
remote schema. `payload_problem` answers why a payload does not match, or None. Formats
(`"format": "email"`, `"date-time"`, …) are checked, as users of a validation step expect.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import jsonschema
from jsonschema.protocols import Validator

REF_KEYS = ("$ref", "$dynamicRef", "$recursiveRef")


class SchemaDefinitionError(ValueError):
    """A `schema` that is not a usable JSON Schema."""


def checked_schema(schema: Any) -> dict[str, Any] | bool:
    """`schema` itself if usable; raises `SchemaDefinitionError` otherwise."""
    if not isinstance(schema, dict | bool):
        raise SchemaDefinitionError("a schema is a JSON Schema object")
    if isinstance(schema, dict) and not isinstance(schema.get("$schema", ""), str):
        raise SchemaDefinitionError("$schema must be a URI string")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise SchemaDefinitionError(f"not a JSON Schema: {exc.message[:300]}") from None
    except RecursionError:
        raise SchemaDefinitionError("the schema is nested too deeply") from None
    remote = _remote_reference(schema)
    if remote is not None:
        raise SchemaDefinitionError(
            f"only references inside the schema ('#…') are allowed, not {remote[:200]!r}")
    return schema


def schema_validator(schema: dict[str, Any] | bool) -> Validator:
    """A validator of `schema` (formats checked), shared by equal schemas."""
    return _validator(json.dumps(schema, sort_keys=True))


def payload_problem(schema: dict[str, Any] | bool | Validator, payload: Any) -> str | None:
    """Why `payload` does not match `schema` (or a validator from `schema_validator`): the
    most relevant error, or None."""
    validator = schema if hasattr(schema, "iter_errors") else schema_validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(payload))
    if error is None:
        return None
    where = "/".join(str(part) for part in error.absolute_path)
    return f"{error.message[:500]} (at /{where})"


@lru_cache(maxsize=256)
def _validator(schema_text: str) -> Validator:
    schema = json.loads(schema_text)
    cls = jsonschema.validators.validator_for(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def _remote_reference(schema: Any) -> str | None:
    """The first reference that leaves the document, if any."""
    pending = [schema]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            for name, value in node.items():
                if name in REF_KEYS and isinstance(value, str) and not value.startswith("#"):
                    return value
                pending.append(value)
        elif isinstance(node, list):
            pending.extend(node)
    return None
