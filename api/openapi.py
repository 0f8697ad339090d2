"""What the OpenAPI document says beyond each view's own schemas, so that it tells the truth.

- Error responses: every operation lists the statuses it can answer with an error, each with
  the contract's error body (`api.errors.ErrorBody`). Most follow from the operation's shape
  (`error_statuses`); a view adds the ones only it can give with `@raises(...)`.
- `handler_config`: one variant per handler type, told apart by `type`.
- Objects bounded with `validate.Length` (marshmallow's only size validator for a `Dict`)
  are documented with `maxProperties` / `minProperties`, not the string keywords.
"""

from __future__ import annotations

from collections.abc import Callable
from copy import deepcopy
from http import HTTPStatus
from typing import Any, TypeVar

from apispec.ext.marshmallow import OpenAPIConverter
from flask_smorest import Api
from marshmallow import fields

from handlers.registry import HANDLER_TYPES

F = TypeVar("F", bound=Callable[..., Any])

#: Any operation: an unexpected failure (500), the database or Redis unreachable (503).
ALWAYS = (500, 503)
#: Any operation that needs a bearer token: no or an unknown key (401), a role or a
#: producer/consumer list that does not allow the call, or an operator call (403).
AUTHENTICATED = (401, 403)
#: A JSON body: not JSON (400), over the server's limit (413), not application/json (415),
#: fields invalid (422).
JSON_BODY = (400, 413, 415, 422)

HANDLER_CONFIG_REF = "#/components/schemas/HandlerConfig"


def raises(*statuses: int) -> Callable[[F], F]:
    """Document error statuses that only this view can answer (`409`, `429`, a `404` for an
    object named in the body…); the ones every operation of its shape gives are added by
    `error_statuses`."""

    def decorate(view: F) -> F:
        doc = deepcopy(getattr(view, "_apidoc", {}))
        doc["errors"] = sorted(set(doc.get("errors", ())) | set(statuses))
        view._apidoc = doc  # type: ignore[attr-defined]
        return view

    return decorate


def error_statuses(doc: dict[str, Any], doc_info: dict[str, Any]) -> set[int]:
    """The error statuses of one operation, from its document so far (`doc`: parameters and
    request body) and what flask-smorest knows of it (`doc_info`)."""
    statuses = set(ALWAYS) | set(doc_info.get("errors", ()))
    if doc_info.get("manual_doc", {}).get("security") != []:
        statuses.update(AUTHENTICATED)
    if doc_info.get("path_arguments"):
        statuses.add(404)
    if doc.get("requestBody"):
        statuses.update(JSON_BODY)
    if any(parameter.get("in") == "query" for parameter in doc.get("parameters", ())
           if isinstance(parameter, dict)):
        statuses.add(422)
    return statuses


def add_error_responses(doc: dict[str, Any], doc_info: dict[str, Any], **_: Any
                        ) -> dict[str, Any]:
    """A flask-smorest doc callback, between its arguments callback (which writes `doc`'s
    parameters and request body) and its response callback: the operation's error
    statuses, each as the response component flask-smorest registers for it (whose schema
    is `Api.ERROR_SCHEMA`, the contract's error body)."""
    responses = doc_info.setdefault("response", {}).setdefault("responses", {})
    for status in sorted(error_statuses(doc, doc_info)):
        if status not in responses and str(status) not in responses:
            responses[status] = [HTTPStatus(status).name]
    return doc


def document(api: Api) -> None:
    """Add to the API's document what the views' schemas cannot say themselves."""
    api.ma_plugin.converter.add_attribute_function(object_size)
    api.spec.components.schema("HandlerConfig", handler_config_schema(api))


def finish(api: Api) -> None:
    """Once the blueprints are registered: add each documented schema's `OPENAPI_EXTRA`
    (JSON Schema keywords a marshmallow schema cannot express, such as which fields go
    together) to its component."""
    schemas = api.spec.components.schemas
    for key, name in api.ma_plugin.converter.refs.items():
        extra = getattr(key[0], "OPENAPI_EXTRA", None)
        if extra and name in schemas:
            schemas[name].update(deepcopy(extra))


def object_size(converter: OpenAPIConverter, field: fields.Field, ret: dict[str, Any],
                **_: Any) -> dict[str, Any]:
    """apispec writes a `Length` validator as `minLength`/`maxLength` on every field that
    is not a list; on an object they mean nothing. Move them to the object keywords."""
    if not isinstance(field, fields.Dict):
        return {}
    moved = {}
    for string_key, object_key in (("minLength", "minProperties"),
                                   ("maxLength", "maxProperties")):
        if string_key in ret:
            moved[object_key] = ret.pop(string_key)
    return moved


def handler_config_schema(api: Api) -> dict[str, Any]:
    """`handler_config`: one of the handler types' configs, chosen by `type`."""
    converter = api.ma_plugin.converter
    variants = {}
    for name, handler_type in HANDLER_TYPES.items():
        variant = converter.schema2jsonschema(handler_type.config_schema)
        variant["properties"]["type"] = {"type": "string", "enum": [name]}
        variants[name] = variant
    variants["http"]["properties"]["url"].update(
        format="uri", pattern="^[Hh][Tt][Tt][Pp][Ss]?://",
        description="an http(s) URL; one that resolves to a private address answers 422 "
                    "unless the operator allows them")
    variants["function"]["properties"]["function"].update(
        description="`package.module:callable` in a module the operator allows (else 422)")
    variants["database"]["properties"]["target"].update(
        description="a target the operator configured (else 422)")
    return {
        "type": "object",
        "description": "How messages are delivered; `type` decides which other fields apply.",
        "oneOf": list(variants.values()),
    }
