"""Avro: schemas, schemaless encoding with a topic's schema, and the registry's rules (valid
definitions, payload checks, schema resolution between a reader and a writer)."""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
from fastavro.validation import ValidationError as AvroValidationError

from formats.problems import PayloadCheck, PayloadProblem, SchemaDefinitionError

#: The types a schema stored inline on a topic may have at its top.
TOP_LEVEL_TYPES = ("record", "enum", "array", "map", "fixed", "string", "int", "long", "float",
                   "double", "boolean", "null", "bytes")
PROMOTIONS = {
    "int": {"int", "long", "float", "double"},
    "long": {"long", "float", "double"},
    "float": {"float", "double"},
    "string": {"string", "bytes"},
    "bytes": {"bytes", "string"},
}
_ENCODE_ERRORS = (AvroValidationError, TypeError, ValueError, AttributeError, KeyError)


class AvroPayloadError(ValueError):
    """A payload that does not match the Avro schema it is encoded with."""


# --- a topic's schema -------------------------------------------------------------------------


def parse_avro_schema(definition: Any) -> Any:
    """The parsed Avro schema, or ValueError if `definition` is not one."""
    if not isinstance(definition, dict) or "type" not in definition:
        raise ValueError("not an Avro schema")
    if definition.get("$schema") or definition["type"] not in TOP_LEVEL_TYPES:
        raise ValueError("not an Avro schema")
    try:
        return fastavro.parse_schema(definition)
    except Exception as exc:  # fastavro raises several types for bad schemas
        raise ValueError(f"invalid Avro schema: {exc}") from None


def avro_schema_of(definition: Any) -> Any:
    """`definition` if it is an Avro schema, else None."""
    try:
        parse_avro_schema(definition)
    except ValueError:
        return None
    return definition


def encode(definition: Any, payload: Any) -> bytes:
    """Schemaless Avro bytes of `payload`; ValueError if `definition` is no Avro schema,
    `AvroPayloadError` if the payload does not match it."""
    schema = parse_avro_schema(definition)
    try:
        fastavro.validation.validate(payload, schema, raise_errors=True)
        out = io.BytesIO()
        fastavro.schemaless_writer(out, schema, payload)
    except _ENCODE_ERRORS as exc:
        raise AvroPayloadError(str(exc)) from None
    return out.getvalue()


def decode(definition: Any, raw: bytes) -> Any:
    """The payload schemaless Avro bytes written with `definition` hold."""
    parsed = parse_avro_schema(definition)
    return fastavro.schemaless_reader(io.BytesIO(raw), parsed, parsed)


# --- registry definitions ---------------------------------------------------------------------


def checked_definition(definition: Any) -> tuple[Any, dict[str, Any]]:
    """The parsed schema and its named types; `SchemaDefinitionError` if it is no Avro schema."""
    if isinstance(definition, str) and definition.lstrip()[:1] in ("{", "["):
        try:
            definition = json.loads(definition)
        except ValueError:
            raise SchemaDefinitionError("an Avro schema given as text must be JSON") from None
    _check_shapes(definition)
    named: dict[str, Any] = {}
    try:
        parsed = fastavro.parse_schema(definition, named_schemas=named, _write_hint=False)
    except RecursionError:
        raise SchemaDefinitionError("the Avro schema is nested too deeply") from None
    except Exception as exc:  # fastavro raises many types (SchemaParseException, Key/TypeError)
        raise SchemaDefinitionError(f"not an Avro schema: {str(exc)[:300]}") from None
    return parsed, named


def _check_shapes(parsed: Any) -> None:
    """What `fastavro` lets pass (it fills in an empty list) but a schema needs: records
    with a `fields` list."""
    pending = [parsed]
    while pending:
        node = pending.pop()
        if isinstance(node, list):
            pending.extend(node)
        elif isinstance(node, dict):
            if node.get("type") in ("record", "error"):
                fields = node.get("fields")
                if not isinstance(fields, list):
                    raise SchemaDefinitionError("an Avro record needs a list of fields")
                pending.extend(f.get("type") for f in fields if isinstance(f, dict))
            for key in ("items", "values"):
                if key in node:
                    pending.append(node[key])
            if isinstance(node.get("type"), dict | list):
                pending.append(node["type"])


# --- payloads ---------------------------------------------------------------------------------


def payload_checker(definition: Any) -> PayloadCheck:
    parsed, _ = checked_definition(definition)

    def check(payload: Any) -> PayloadProblem | None:
        try:
            fastavro.validate(payload, parsed, raise_errors=True)
        except AvroValidationError as exc:
            first = exc.errors[0] if exc.errors else None
            field = getattr(first, "field", None) or ""
            path = "/" + field.replace(".", "/") if field else "/"
            return PayloadProblem(f"does not match the Avro schema (at {path})", path)
        except (RecursionError, TypeError, ValueError):
            return PayloadProblem("does not match the Avro schema (at /)", "/")
        return None

    return check


# --- compatibility ----------------------------------------------------------------------------


def reader_problems(reader_definition: Any, writer_definition: Any) -> list[str]:
    """Avro schema resolution (the specification's rules) of `writer` data by `reader`:
    primitives must match or be promotable (int→long→float→double, string↔bytes); a reader
    record field must exist in the writer (by name or alias) or have a default; writer enum
    symbols must be reader symbols (unless the reader enum has a default); arrays, maps and
    fixed types resolve by their items, values and size; every writer union branch must be
    readable by the reader (a reader union needs one matching branch)."""
    reader, reader_named = checked_definition(reader_definition)
    writer, writer_named = checked_definition(writer_definition)
    checker = _Resolution(reader_named, writer_named)
    checker.check(reader, writer, "")
    return checker.problems


class _Resolution:
    def __init__(self, reader_named: dict[str, Any], writer_named: dict[str, Any]) -> None:
        self.reader_named = reader_named
        self.writer_named = writer_named
        self.problems: list[str] = []
        self._seen: set[tuple[str, str]] = set()

    def check(self, reader: Any, writer: Any, path: str) -> None:
        reader = self._resolve(reader, self.reader_named)
        writer = self._resolve(writer, self.writer_named)
        if isinstance(writer, list):
            for branch in writer:
                self.check(reader, branch, path)
            return
        if isinstance(reader, list):
            if not any(self._readable(branch, writer) for branch in reader):
                self.problems.append(f"{path or '/'}: no branch of the reader union reads "
                                     f"{_type_name(writer)}")
            return
        self._check_one(reader, writer, path)

    def _readable(self, reader: Any, writer: Any) -> bool:
        probe = _Resolution(self.reader_named, self.writer_named)
        probe._seen = set(self._seen)
        probe.check(reader, writer, "")
        return not probe.problems

    def _resolve(self, schema: Any, named: dict[str, Any]) -> Any:
        if isinstance(schema, str) and schema in named:
            return named[schema]
        return schema

    def _check_one(self, reader: Any, writer: Any, path: str) -> None:
        reader_type, writer_type = _type_name(reader), _type_name(writer)
        if reader_type != writer_type and reader_type not in PROMOTIONS.get(writer_type, ()):
            self.problems.append(f"{path or '/'}: type {writer_type} cannot be read as "
                                 f"{reader_type}")
            return
        if reader_type == "record":
            self._check_record(reader, writer, path)
        elif reader_type == "enum":
            missing = set(writer["symbols"]) - set(reader["symbols"])
            if missing and "default" not in reader:
                self.problems.append(f"{path or '/'}: enum symbols {sorted(missing)} are unknown "
                                     "to the reader")
        elif reader_type == "array":
            self.check(reader["items"], writer["items"], f"{path}/items")
        elif reader_type == "map":
            self.check(reader["values"], writer["values"], f"{path}/values")
        elif reader_type == "fixed" and reader["size"] != writer["size"]:
            self.problems.append(f"{path or '/'}: fixed size {writer['size']} cannot be read "
                                 f"as {reader['size']}")

    def _check_record(self, reader: dict[str, Any], writer: dict[str, Any], path: str) -> None:
        pair = (reader.get("name", ""), writer.get("name", ""))
        if pair in self._seen:  # recursive types: this pair is being checked further up
            return
        self._seen.add(pair)
        writer_fields = {f["name"]: f for f in writer["fields"]}
        for field in reader["fields"]:
            names = [field["name"], *field.get("aliases", [])]
            match = next((writer_fields[n] for n in names if n in writer_fields), None)
            if match is None:
                if "default" not in field:
                    self.problems.append(f"{path}/{field['name']}: field without a default is "
                                         "missing from the data")
                continue
            self.check(field["type"], match["type"], f"{path}/{field['name']}")


def _type_name(schema: Any) -> str:
    if isinstance(schema, dict):
        kind = schema["type"]
        return kind if isinstance(kind, str) else "complex"
    if isinstance(schema, list):
        return "union"
    return str(schema)
