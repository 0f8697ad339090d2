"""The schema registry's rules: which definitions are valid, which new versions are compatible,
and whether a payload matches a registered schema. Knows nothing of HTTP or storage.

Formats:
- `json`: a JSON Schema, vetted by `handlers.schema_check.checked_schema`.
- `avro`: an Avro schema (JSON: an object, array or type name), parsed by `fastavro`.
- `protobuf`: `.proto` source text, compiled by protoc (`mq.protobuf`); the file's first message
  is the payload type, and payloads are its proto3 JSON form. Compatibility follows the wire
  rules of the protobuf language guide, message by message (see `_protobuf_problems`).

Compatibility, in reader/writer terms (the reader must be able to read what the writer wrote):
`BACKWARD` = the new version reads data written with the previous one; `FORWARD` = the previous
version reads data written with the new one; `FULL` = both; `NONE` = no check.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import fastavro
from fastavro.validation import ValidationError as AvroValidationError
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from handlers.schema_check import SchemaDefinitionError, checked_schema, schema_validator
from mq.protobuf import ProtoSchema, ProtoSchemaError, compiled, payload_problem

FORMATS = ("json", "avro", "protobuf")
MODES = ("BACKWARD", "FORWARD", "FULL", "NONE")

AVRO_PROMOTIONS = {
    "int": {"int", "long", "float", "double"},
    "long": {"long", "float", "double"},
    "float": {"float", "double"},
    "string": {"string", "bytes"},
    "bytes": {"bytes", "string"},
}
JSON_WIDENINGS = {"integer": {"integer", "number"}}


@dataclass(frozen=True)
class PayloadProblem:
    """Why a payload does not match: a human message and the path of the first error."""

    message: str
    path: str


# --- definitions ------------------------------------------------------------------------------


def check_definition(fmt: str, definition: Any) -> None:
    """Raise `SchemaDefinitionError` unless `definition` is a valid schema of format `fmt`."""
    if fmt == "json":
        checked_schema(definition)
    elif fmt == "avro":
        _parsed_avro(definition)
    elif fmt == "protobuf":
        _parsed_proto(definition)
    else:
        raise SchemaDefinitionError(f"unknown format {fmt!r}")


def _parsed_avro(definition: Any) -> tuple[Any, dict[str, Any]]:
    """The parsed schema and its named types; `SchemaDefinitionError` if it is no Avro schema."""
    if isinstance(definition, str) and definition.lstrip()[:1] in ("{", "["):
        try:
            definition = json.loads(definition)
        except ValueError:
            raise SchemaDefinitionError("an Avro schema given as text must be JSON") from None
    _check_avro_shapes(definition)
    named: dict[str, Any] = {}
    try:
        parsed = fastavro.parse_schema(definition, named_schemas=named, _write_hint=False)
    except RecursionError:
        raise SchemaDefinitionError("the Avro schema is nested too deeply") from None
    except Exception as exc:  # fastavro raises many types (SchemaParseException, Key/TypeError)
        raise SchemaDefinitionError(f"not an Avro schema: {str(exc)[:300]}") from None
    return parsed, named


def _check_avro_shapes(parsed: Any) -> None:
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


def _parsed_proto(definition: Any) -> ProtoSchema:
    try:
        return compiled(definition)
    except ProtoSchemaError as exc:
        raise SchemaDefinitionError(str(exc)) from None


# --- compatibility ----------------------------------------------------------------------------


def incompatibilities(fmt: str, mode: str, previous: Any, new: Any) -> list[str]:
    """Why `new` breaks `mode` against `previous` (both valid definitions); empty if it does not."""
    if mode == "NONE":
        return []
    check = _READER_CHECKS[fmt]
    problems: list[str] = []
    try:
        if mode in ("BACKWARD", "FULL"):
            problems += [f"BACKWARD: {p}" for p in check(new, previous)]
        if mode in ("FORWARD", "FULL"):
            problems += [f"FORWARD: {p}" for p in check(previous, new)]
    except RecursionError:
        raise SchemaDefinitionError("the schema is nested too deeply to compare") from None
    return problems


def _avro_reader_problems(reader_definition: Any, writer_definition: Any) -> list[str]:
    """Avro schema resolution (the specification's rules) of `writer` data by `reader`:
    primitives must match or be promotable (int→long→float→double, string↔bytes); a reader
    record field must exist in the writer (by name or alias) or have a default; writer enum
    symbols must be reader symbols (unless the reader enum has a default); arrays, maps and
    fixed types resolve by their items, values and size; every writer union branch must be
    readable by the reader (a reader union needs one matching branch)."""
    reader, reader_named = _parsed_avro(reader_definition)
    writer, writer_named = _parsed_avro(writer_definition)
    checker = _AvroResolution(reader_named, writer_named)
    checker.check(reader, writer, "")
    return checker.problems


class _AvroResolution:
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
                                     f"{_avro_type(writer)}")
            return
        self._check_one(reader, writer, path)

    def _readable(self, reader: Any, writer: Any) -> bool:
        probe = _AvroResolution(self.reader_named, self.writer_named)
        probe._seen = set(self._seen)
        probe.check(reader, writer, "")
        return not probe.problems

    def _resolve(self, schema: Any, named: dict[str, Any]) -> Any:
        if isinstance(schema, str) and schema in named:
            return named[schema]
        return schema

    def _check_one(self, reader: Any, writer: Any, path: str) -> None:
        reader_type, writer_type = _avro_type(reader), _avro_type(writer)
        if reader_type != writer_type and reader_type not in AVRO_PROMOTIONS.get(writer_type, ()):
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


def _avro_type(schema: Any) -> str:
    if isinstance(schema, dict):
        kind = schema["type"]
        return kind if isinstance(kind, str) else "complex"
    if isinstance(schema, list):
        return "union"
    return str(schema)


def _json_reader_problems(reader: Any, writer: Any) -> list[str]:
    """A practical rule set for JSON Schemas of objects: data valid under `writer` should be
    valid under `reader`. Reported: a property the reader requires that the writer does not;
    a reader `type` that does not admit every writer type (integer may widen to number, and
    a reader with a `type` cannot read a writer without one); a reader `enum` that lacks
    writer values (or a writer without `enum`); writer properties a reader with
    `additionalProperties: false` does not declare; a `false` reader schema. Properties are
    compared recursively, as are array `items`. Keywords beyond these (patterns, bounds,
    `$ref`s) are not compared."""
    problems: list[str] = []
    _json_compare(reader, writer, "", problems)
    return problems


def _json_compare(reader: Any, writer: Any, path: str, problems: list[str]) -> None:
    where = path or "/"
    if reader is True or writer is False or not isinstance(reader, dict):
        if reader is False and writer is not False:
            problems.append(f"{where}: the reader accepts nothing")
        return
    if not isinstance(writer, dict):  # writer `true`: anything at all
        writer = {}
    _json_types(reader, writer, where, problems)
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
            _json_compare(reader_properties[name], writer_property, f"{path}/{name}", problems)
        elif reader.get("additionalProperties") is False:
            problems.append(f"{path}/{name}: not allowed by the reader "
                            "(additionalProperties is false)")
    if isinstance(reader.get("items"), dict | bool):
        _json_compare(reader["items"], writer.get("items", True), f"{path}/items", problems)


def _json_types(reader: dict[str, Any], writer: dict[str, Any], where: str,
                problems: list[str]) -> None:
    if "type" not in reader:
        return
    reader_types = _as_set(reader["type"])
    if "type" not in writer:
        problems.append(f"{where}: the reader requires type {sorted(reader_types)}, the writer "
                        "allows any type")
        return
    for writer_type in sorted(_as_set(writer["type"])):
        if not reader_types & JSON_WIDENINGS.get(writer_type, {writer_type}):
            problems.append(f"{where}: type {writer_type} is not accepted by the reader "
                            f"({sorted(reader_types)})")


def _as_set(value: Any) -> set[str]:
    return {value} if isinstance(value, str) else {v for v in value if isinstance(v, str)}


# Wire-compatible field types (protobuf language guide, "Updating a message type"): a value
# written as one type of a group reads as any other of the group.
_PROTO_WIRE_GROUPS = [
    {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_INT64,
     FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_BOOL, FieldDescriptor.TYPE_ENUM},
    {FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SINT64},
    {FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_SFIXED32},
    {FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64},
    {FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES},
]


def _protobuf_problems(reader_definition: Any, writer_definition: Any) -> list[str]:
    """Whether a reader of one `.proto` reads what a writer of the other wrote: the payload type
    (the first message) keeps its name; in every message both define, a field number both use
    keeps a wire-compatible type (int32/uint32/int64/uint64/bool/enum, sint32/sint64,
    fixed32/sfixed32, fixed64/sfixed64, string/bytes; messages and enums keep their type name)
    and stays repeated or singular; a `required` (proto2) reader field exists in the writer.
    Added and removed fields are compatible (unknown fields are skipped, absent ones default);
    names may change (the wire carries numbers)."""
    reader, writer = _parsed_proto(reader_definition), _parsed_proto(writer_definition)
    if reader.message.full_name != writer.message.full_name:
        return [f"the payload type changed from {writer.message.full_name} to "
                f"{reader.message.full_name}"]
    reader_messages = _proto_messages(reader.message.file.message_types_by_name.values())
    problems: list[str] = []
    for name, written in _proto_messages(
            writer.message.file.message_types_by_name.values()).items():
        if name in reader_messages:
            problems += _proto_field_problems(reader_messages[name], written)
    return problems


def _proto_messages(top_level: Any) -> dict[str, Descriptor]:
    """Every message of a file by full name, nested ones included (so are a map's entries:
    `map<K, V>` is a repeated message with fields `key` = 1 and `value` = 2)."""
    found: dict[str, Descriptor] = {}
    pending = list(top_level)
    while pending:
        message = pending.pop()
        found[message.full_name] = message
        pending.extend(message.nested_types)
    return found


def _proto_field_problems(reader: Descriptor, writer: Descriptor) -> list[str]:
    problems = []
    for field in writer.fields:
        read = reader.fields_by_number.get(field.number)
        if read is not None:
            problem = _proto_field_change(read, field)
            if problem:
                problems.append(f"{reader.full_name} field {field.number} ({field.name}): "
                                f"{problem}")
    for field in reader.fields:
        if field.is_required and field.number not in writer.fields_by_number:
            problems.append(f"{reader.full_name} field {field.number} ({field.name}): required "
                            "by the reader but not written")
    return problems


def _proto_field_change(reader: FieldDescriptor, writer: FieldDescriptor) -> str | None:
    if reader.is_repeated != writer.is_repeated:
        return "changed between repeated and singular"
    reader_type, writer_type = _proto_type(reader), _proto_type(writer)
    if reader_type == writer_type:
        return None
    if reader.type == writer.type == FieldDescriptor.TYPE_MESSAGE \
            or reader.type == writer.type == FieldDescriptor.TYPE_ENUM \
            or not any({reader.type, writer.type} <= group for group in _PROTO_WIRE_GROUPS):
        return f"type {writer_type} cannot be read as {reader_type}"
    return None


def _proto_type(field: FieldDescriptor) -> str:
    """`int32`, `string`, …, or the full name of a message or enum type."""
    named = field.message_type or field.enum_type
    if named is not None:
        return named.full_name
    return _PROTO_TYPE_NAMES[field.type]


_PROTO_TYPE_NAMES = {number: name.removeprefix("TYPE_").lower()
                     for name, number in vars(FieldDescriptor).items()
                     if name.startswith("TYPE_") and isinstance(number, int)}


_READER_CHECKS: dict[str, Callable[[Any, Any], list[str]]] = {
    "json": _json_reader_problems,
    "avro": _avro_reader_problems,
    "protobuf": _protobuf_problems,
}


# --- payloads ---------------------------------------------------------------------------------


PayloadCheck = Callable[[Any], PayloadProblem | None]


def payload_checker(fmt: str, definition: Any) -> PayloadCheck:
    """A function answering why a payload does not match `definition` (or None). Build it once
    per schema and keep it: it holds the compiled validator."""
    if fmt == "avro":
        return _avro_checker(definition)
    if fmt == "protobuf":
        return _protobuf_checker(definition)
    return _json_checker(definition)


def _json_checker(definition: Any) -> PayloadCheck:
    import jsonschema

    validator = schema_validator(definition)

    def check(payload: Any) -> PayloadProblem | None:
        error = jsonschema.exceptions.best_match(validator.iter_errors(payload))
        if error is None:
            return None
        path = "/" + "/".join(str(part) for part in error.absolute_path)
        return PayloadProblem(f"{error.message[:500]} (at {path})", path)

    return check


def _avro_checker(definition: Any) -> PayloadCheck:
    parsed, _ = _parsed_avro(definition)

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


def _protobuf_checker(definition: Any) -> PayloadCheck:
    """Payloads of protobuf topics are the proto3 JSON form of the file's first message."""
    schema = _parsed_proto(definition)

    def check(payload: Any) -> PayloadProblem | None:
        problem = payload_problem(schema, payload)
        return PayloadProblem(str(problem), problem.path) if problem is not None else None

    return check
