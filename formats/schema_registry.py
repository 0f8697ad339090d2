"""The schema registry's rules: which definitions are valid, which new versions are compatible,
and whether a payload matches a registered schema. Knows nothing of HTTP or storage.

Formats, one module each:
- `json`: a JSON Schema, vetted by `formats.json_schema.checked_schema`.
- `avro`: an Avro schema (JSON: an object, array or type name), parsed by `fastavro`
  (`formats.avro`).
- `protobuf`: `.proto` source text, compiled by protoc (`formats.protobuf`); the file's first
  message is the payload type, and payloads are its proto3 JSON form. Compatibility follows the
  wire rules of the protobuf language guide, message by message.

Compatibility, in reader/writer terms (the reader must be able to read what the writer wrote):
`BACKWARD` = the new version reads data written with the previous one; `FORWARD` = the previous
version reads data written with the new one; `FULL` = both; `NONE` = no check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from formats import avro, json_schema, protobuf
from formats.problems import PayloadCheck, PayloadProblem, SchemaDefinitionError

__all__ = ["FORMATS", "MODES", "PayloadCheck", "PayloadProblem", "check_definition",
           "incompatibilities", "payload_checker"]

MODES = ("BACKWARD", "FORWARD", "FULL", "NONE")


@dataclass(frozen=True)
class SchemaFormat:
    """What the registry needs of one format."""

    check_definition: Callable[[Any], object]
    reader_problems: Callable[[Any, Any], list[str]]
    payload_checker: Callable[[Any], PayloadCheck]


_FORMATS = {
    "json": SchemaFormat(json_schema.checked_schema, json_schema.reader_problems,
                         json_schema.payload_checker),
    "avro": SchemaFormat(avro.checked_definition, avro.reader_problems, avro.payload_checker),
    "protobuf": SchemaFormat(protobuf.checked_definition, protobuf.reader_problems,
                             protobuf.payload_checker),
}
FORMATS = tuple(_FORMATS)


def check_definition(fmt: str, definition: Any) -> None:
    """Raise `SchemaDefinitionError` unless `definition` is a valid schema of format `fmt`."""
    schema_format = _FORMATS.get(fmt)
    if schema_format is None:
        raise SchemaDefinitionError(f"unknown format {fmt!r}")
    schema_format.check_definition(definition)


def incompatibilities(fmt: str, mode: str, previous: Any, new: Any) -> list[str]:
    """Why `new` breaks `mode` against `previous` (both valid definitions); empty if it does not."""
    if mode == "NONE":
        return []
    check = _FORMATS[fmt].reader_problems
    problems: list[str] = []
    try:
        if mode in ("BACKWARD", "FULL"):
            problems += [f"BACKWARD: {p}" for p in check(new, previous)]
        if mode in ("FORWARD", "FULL"):
            problems += [f"FORWARD: {p}" for p in check(previous, new)]
    except RecursionError:
        raise SchemaDefinitionError("the schema is nested too deeply to compare") from None
    return problems


def payload_checker(fmt: str, definition: Any) -> PayloadCheck:
    """A function answering why a payload does not match `definition` (or None). Build it once
    per schema and keep it: it holds the compiled validator."""
    return _FORMATS.get(fmt, _FORMATS["json"]).payload_checker(definition)
