"""Protobuf schemas and payloads.

A protobuf schema is the text of one `.proto` file. It is compiled in-process by protoc (from
grpcio-tools), which may import the well-known types (`google/protobuf/*.proto`) and nothing
else. The compiled descriptors are loaded into a pool of their own per schema, so two tenants'
files (or two versions of one) never meet, and the file's first message is the payload type.

Payloads cross the API and reach handlers in the proto3 JSON mapping (field names as written in
the `.proto`, lowerCamelCase accepted on input); the wire format is what is stored. Decoded
payloads show every field (zero values included) and 64-bit integers as JSON numbers.

For the schema registry: valid definitions, payload checks, and compatibility following the
wire rules of the protobuf language guide, message by message (see `reader_problems`).
"""

from __future__ import annotations

import os
import tempfile
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError, Message

from formats.problems import PayloadCheck, PayloadProblem, SchemaDefinitionError

MAX_PROTO_CHARS = 200_000
_FILE_NAME = "schema.proto"
_compiler_lock = threading.Lock()


class ProtoSchemaError(ValueError):
    """A text that is no usable `.proto` file; the message names the first errors and lines."""


class ProtoPayloadError(ValueError):
    """A payload that does not fit the message type; `path` points at the first error."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


@dataclass(frozen=True)
class ProtoSchema:
    """A compiled `.proto` file: the pool holding it and the files it imports, and its first
    message type."""

    pool: descriptor_pool.DescriptorPool
    message: Descriptor

    def message_class(self, descriptor: Descriptor | None = None) -> type[Message]:
        return message_factory.GetMessageClass(descriptor or self.message)


def compiled(text: Any) -> ProtoSchema:
    """The compiled schema of a `.proto` text; `ProtoSchemaError` if it does not compile or
    defines no message. Compiled once per process and text."""
    if not isinstance(text, str) or not text.strip():
        raise ProtoSchemaError("a protobuf schema is the text of a .proto file")
    if len(text) > MAX_PROTO_CHARS:
        raise ProtoSchemaError(f"a .proto file may have at most {MAX_PROTO_CHARS} characters")
    return _compile(text)


@lru_cache(maxsize=256)
def _compile(text: str) -> ProtoSchema:
    files = descriptor_pb2.FileDescriptorSet.FromString(_descriptor_set(text))
    main = files.file[-1]  # protoc lists dependencies first
    if not main.message_type:
        raise ProtoSchemaError("a .proto file for messages must define a message")
    pool = descriptor_pool.DescriptorPool()
    for file in files.file:
        pool.Add(file)
    prefix = f"{main.package}." if main.package else ""
    return ProtoSchema(pool, pool.FindMessageTypeByName(prefix + main.message_type[0].name))


def _descriptor_set(text: str) -> bytes:
    """protoc's FileDescriptorSet (with imports) for `text`. protoc is asked twice: once for
    the errors as data (`get_protos` raises them), once for the descriptor set, which only
    `run_main` writes, to a file. Imported here: only processes that compile pay for protoc."""
    import grpc_tools
    from grpc_tools import _protoc_compiler

    well_known_types = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    with _compiler_lock, tempfile.TemporaryDirectory() as folder:
        with open(os.path.join(folder, _FILE_NAME), "w", encoding="utf-8") as source:
            source.write(text)
        includes = [folder.encode(), well_known_types.encode()]
        try:
            _protoc_compiler.get_protos(_FILE_NAME.encode(), includes)
        except _protoc_compiler.ProtocErrors as exc:
            raise ProtoSchemaError(_describe(exc.errors())) from None
        output = os.path.join(folder, "schema.pb")
        status = _protoc_compiler.run_main([
            b"protoc", b"-I" + includes[0], b"-I" + includes[1], b"--include_imports",
            b"--descriptor_set_out=" + output.encode(), _FILE_NAME.encode()])
        if status != 0 or not os.path.exists(output):
            raise ProtoSchemaError("the .proto file does not compile")
        with open(output, "rb") as compiled_set:
            return compiled_set.read()


def _describe(errors: list[Any]) -> str:
    """'line 3:12: "Foo" is not defined.; …' (lines counted from 1), at most three errors."""
    described = []
    for error in errors[:3]:
        message = error.message.decode(errors="replace")[:200]
        if error.filename.decode(errors="replace") == _FILE_NAME and error.line >= 0:
            described.append(f"line {error.line + 1}:{error.column + 1}: {message}")
        else:
            described.append(message)
    return "not a valid .proto file: " + "; ".join(described)


# --- payloads ---------------------------------------------------------------------------------


def encode(schema: ProtoSchema, payload: Any) -> bytes:
    """The wire bytes of a JSON payload; `ProtoPayloadError` if it does not fit."""
    message = _parsed(schema, schema.message, payload)
    if message is None:
        raise payload_problem(schema, payload) or ProtoPayloadError("cannot be encoded", "/")
    return message.SerializeToString(deterministic=True)


def decode(schema: ProtoSchema, data: bytes) -> dict[str, Any]:
    """The JSON form of wire bytes; `ValueError` if they are no such message."""
    try:
        message = schema.message_class().FromString(data)
    except DecodeError as exc:
        raise ValueError(f"not a {schema.message.full_name} message: {exc}") from None
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True,
                                     preserving_proto_field_name=True,
                                     unquote_int64_if_possible=True)


def payload_problem(schema: ProtoSchema, payload: Any) -> ProtoPayloadError | None:
    """Why `payload` is no JSON form of the schema's message, with the path of the first error
    (None if it is one). json_format does the parsing; this only finds where it fails."""
    if not isinstance(payload, dict):
        return ProtoPayloadError(f"a {schema.message.name} message is a JSON object (at /)", "/")
    try:
        json_format.ParseDict(payload, schema.message_class()())
    except _PARSE_ERRORS as exc:
        path = _first_bad_path(schema, schema.message, payload, "")
        reason = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        return ProtoPayloadError(f"{reason} (at {path})", path)
    return None


_PARSE_ERRORS = (json_format.ParseError, TypeError, ValueError, AttributeError, RecursionError,
                 OverflowError)


def _parsed(schema: ProtoSchema, descriptor: Descriptor, value: Any) -> Message | None:
    """The message `value` is the JSON form of, or None."""
    if not isinstance(value, dict):
        return None
    try:
        return json_format.ParseDict(value, schema.message_class(descriptor)())
    except _PARSE_ERRORS:
        return None


def _first_bad_path(schema: ProtoSchema, descriptor: Descriptor, value: dict[str, Any],
                    path: str) -> str:
    for key, item in value.items():
        field = _field_named(descriptor, key)
        where = f"{path}/{key}"
        if field is None:
            return where
        if _parses(schema, descriptor, {key: item}):
            continue
        return _inside_field(schema, field, item, where)
    return path or "/"


def _inside_field(schema: ProtoSchema, field: FieldDescriptor, value: Any, where: str) -> str:
    """The path of the first bad part of one field's value (the field itself if it is not a
    message or a list one can look into)."""
    is_list = _is_repeated(field) and not _is_map(field) and isinstance(value, list)
    items = list(enumerate(value)) if is_list else [(None, value)]
    for index, item in items:
        item_path = where if index is None else f"{where}/{index}"
        if index is not None and _parses(schema, field.containing_type, {field.name: [item]}):
            continue
        if _is_plain_message(field) and isinstance(item, dict):
            return _first_bad_path(schema, field.message_type, item, item_path)
        return item_path
    return where


def _parses(schema: ProtoSchema, descriptor: Descriptor, value: dict[str, Any]) -> bool:
    return _parsed(schema, descriptor, value) is not None


def _field_named(descriptor: Descriptor, key: str) -> FieldDescriptor | None:
    field = descriptor.fields_by_name.get(key)
    if field is not None:
        return field
    return next((f for f in descriptor.fields if f.json_name == key), None)


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def _is_map(field: FieldDescriptor) -> bool:
    message = field.message_type
    return message is not None and message.GetOptions().map_entry


def _is_plain_message(field: FieldDescriptor) -> bool:
    """A message field whose JSON form is an object of its fields (not a map and not a
    well-known type with a JSON form of its own, like Timestamp)."""
    message = field.message_type
    return message is not None and not _is_map(field) \
        and not message.full_name.startswith("google.protobuf.")


# --- registry definitions ---------------------------------------------------------------------


def checked_definition(definition: Any) -> ProtoSchema:
    """The compiled schema; `SchemaDefinitionError` if `definition` is no usable `.proto`."""
    try:
        return compiled(definition)
    except ProtoSchemaError as exc:
        raise SchemaDefinitionError(str(exc)) from None


def payload_checker(definition: Any) -> PayloadCheck:
    """Payloads of protobuf topics are the proto3 JSON form of the file's first message."""
    schema = checked_definition(definition)

    def check(payload: Any) -> PayloadProblem | None:
        problem = payload_problem(schema, payload)
        return PayloadProblem(str(problem), problem.path) if problem is not None else None

    return check


# --- compatibility ----------------------------------------------------------------------------


# Wire-compatible field types (protobuf language guide, "Updating a message type"): a value
# written as one type of a group reads as any other of the group.
_WIRE_GROUPS = [
    {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_INT64,
     FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_BOOL, FieldDescriptor.TYPE_ENUM},
    {FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SINT64},
    {FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_SFIXED32},
    {FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64},
    {FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES},
]


def reader_problems(reader_definition: Any, writer_definition: Any) -> list[str]:
    """Whether a reader of one `.proto` reads what a writer of the other wrote: the payload type
    (the first message) keeps its name; in every message both define, a field number both use
    keeps a wire-compatible type (int32/uint32/int64/uint64/bool/enum, sint32/sint64,
    fixed32/sfixed32, fixed64/sfixed64, string/bytes; messages and enums keep their type name)
    and stays repeated or singular; a `required` (proto2) reader field exists in the writer.
    Added and removed fields are compatible (unknown fields are skipped, absent ones default);
    names may change (the wire carries numbers)."""
    reader, writer = checked_definition(reader_definition), checked_definition(writer_definition)
    if reader.message.full_name != writer.message.full_name:
        return [f"the payload type changed from {writer.message.full_name} to "
                f"{reader.message.full_name}"]
    reader_messages = _messages(reader.message.file.message_types_by_name.values())
    problems: list[str] = []
    for name, written in _messages(
            writer.message.file.message_types_by_name.values()).items():
        if name in reader_messages:
            problems += _field_problems(reader_messages[name], written)
    return problems


def _messages(top_level: Any) -> dict[str, Descriptor]:
    """Every message of a file by full name, nested ones included (so are a map's entries:
    `map<K, V>` is a repeated message with fields `key` = 1 and `value` = 2)."""
    found: dict[str, Descriptor] = {}
    pending = list(top_level)
    while pending:
        message = pending.pop()
        found[message.full_name] = message
        pending.extend(message.nested_types)
    return found


def _field_problems(reader: Descriptor, writer: Descriptor) -> list[str]:
    problems = []
    for field in writer.fields:
        read = reader.fields_by_number.get(field.number)
        if read is not None:
            problem = _field_change(read, field)
            if problem:
                problems.append(f"{reader.full_name} field {field.number} ({field.name}): "
                                f"{problem}")
    for field in reader.fields:
        if field.is_required and field.number not in writer.fields_by_number:
            problems.append(f"{reader.full_name} field {field.number} ({field.name}): required "
                            "by the reader but not written")
    return problems


def _field_change(reader: FieldDescriptor, writer: FieldDescriptor) -> str | None:
    if reader.is_repeated != writer.is_repeated:
        return "changed between repeated and singular"
    reader_type, writer_type = _type_name(reader), _type_name(writer)
    if reader_type == writer_type:
        return None
    if reader.type == writer.type == FieldDescriptor.TYPE_MESSAGE \
            or reader.type == writer.type == FieldDescriptor.TYPE_ENUM \
            or not any({reader.type, writer.type} <= group for group in _WIRE_GROUPS):
        return f"type {writer_type} cannot be read as {reader_type}"
    return None


def _type_name(field: FieldDescriptor) -> str:
    """`int32`, `string`, …, or the full name of a message or enum type."""
    named = field.message_type or field.enum_type
    if named is not None:
        return named.full_name
    return _TYPE_NAMES[field.type]


_TYPE_NAMES = {number: name.removeprefix("TYPE_").lower()
               for name, number in vars(FieldDescriptor).items()
               if name.startswith("TYPE_") and isinstance(number, int)}
