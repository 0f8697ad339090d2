"""JSON Schema: vetting definitions, checking payloads, and reader/writer compatibility.

Used for a subscription's `handler_config.schema` (the payload must match before the handler
runs) and for `json` schemas of the registry.
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

from formats.problems import PayloadCheck, PayloadProblem, SchemaDefinitionError

REF_KEYS = ("$ref", "$dynamicRef", "$recursiveRef")
WIDENINGS = {"integer": {"integer", "number"}}


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
    problem = _first_problem(validator, payload)
    return problem.message if problem is not None else None


def _first_problem(validator: Validator, payload: Any) -> PayloadProblem | None:
    error = jsonschema.exceptions.best_match(validator.iter_errors(payload))
    if error is None:
        return None
    path = "/" + "/".join(str(part) for part in error.absolute_path)
    return PayloadProblem(f"{error.message[:500]} (at {path})", path)


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


# --- payloads ---------------------------------------------------------------------------------


def payload_checker(definition: Any) -> PayloadCheck:
    """Why a payload does not match `definition` (or None), with the path of the first error."""
    validator = schema_validator(definition)
    return lambda payload: _first_problem(validator, payload)


# --- compatibility ----------------------------------------------------------------------------


def reader_problems(reader: Any, writer: Any) -> list[str]:
    """A practical rule set for JSON Schemas of objects: data valid under `writer` should be
    valid under `reader`. Reported: a property the reader requires that the writer does not;
    a reader `type` that does not admit every writer type (integer may widen to number, and
    a reader with a `type` cannot read a writer without one); a reader `enum` that lacks
    writer values (or a writer without `enum`); writer properties a reader with
    `additionalProperties: false` does not declare; a `false` reader schema. Properties are
    compared recursively, as are array `items`. Keywords beyond these (patterns, bounds,
    `$ref`s) are not compared."""
    problems: list[str] = []
    _compare(reader, writer, "", problems)
    return problems


def _compare(reader: Any, writer: Any, path: str, problems: list[str]) -> None:
    where = path or "/"
    if reader is True or writer is False or not isinstance(reader, dict):
        if reader is False and writer is not False:
            problems.append(f"{where}: the reader accepts nothing")
        return
    if not isinstance(writer, dict):  # writer `true`: anything at all
        writer = {}
    _types(reader, writer, where, problems)
    if "enum" in reader:
        extra = [v for v in writer.get("enum", [None, "<any>"]) if v not in reader["enum"]]
        if "enum" not in writer or extra:
            problems.append(f"{where}: values {extra[:5]} are outside the reader's enum")
    newly_required = set(reader.get("required", [])) - set(writer.get("required", []))
    for name in sorted(newly_required):
        problems.append(f"{path}/{name}: required by the reader but optional for the writer")
    reader_properties = reader.get("properties", {})
    writer_properties = writer.get("properties", {})
    for name, writer_property in writer_properties.items():
        if name in reader_properties:
            _compare(reader_properties[name], writer_property, f"{path}/{name}", problems)
        elif reader.get("additionalProperties") is False:
            problems.append(f"{path}/{name}: not allowed by the reader "
                            "(additionalProperties is false)")
    if isinstance(reader.get("items"), dict | bool):
        _compare(reader["items"], writer.get("items", True), f"{path}/items", problems)


def _types(reader: dict[str, Any], writer: dict[str, Any], where: str,
           problems: list[str]) -> None:
    if "type" not in reader:
        return
    reader_types = _as_set(reader["type"])
    if "type" not in writer:
        problems.append(f"{where}: the reader requires type {sorted(reader_types)}, the writer "
                        "allows any type")
        return
    for writer_type in sorted(_as_set(writer["type"])):
        if not reader_types & WIDENINGS.get(writer_type, {writer_type}):
            problems.append(f"{where}: type {writer_type} is not accepted by the reader "
                            f"({sorted(reader_types)})")


def _as_set(value: Any) -> set[str]:
    return {value} if isinstance(value, str) else {v for v in value if isinstance(v, str)}
