"""Request parsing on the hot path: the body parsed once, and plain bodies loaded without
marshmallow's per-field machinery.

`check_request_body` (api.bodies) parses every JSON body before any view runs; `Blueprint`
hands that parsed body to webargs instead of letting it parse the text again.

`FastLoad` schemas take a body as it is when every value is of a kind this module can check
directly (strings, strict integers, raw values, dicts and lists of those, nested schemas of
the same) and lies within its field's `Length`/`Range` bounds: what marshmallow would return
unchanged. Anything else — a wrong type, a value out of bounds, an unknown field, a field or
validator this module does not know — goes through marshmallow, which stays the one place
that words validation errors. A publish batch of 1,000 messages costs marshmallow about 80 ms
of CPU; the check here a small fraction of that.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import flask_smorest
from flask import g
from marshmallow import Schema, ValidationError, fields, missing, validate
from marshmallow.types import UnknownOption
from webargs.flaskparser import FlaskParser, abort

from api.openapi import add_error_responses
from mq.errors import ValidationError as MissingBody


class ParsedBodyParser(FlaskParser):
    """webargs' Flask parser, reading the body `check_request_body` parsed already. JSON
    bodies of `FastLoad` schemas skip webargs altogether: the body is loaded with the schema
    and a refusal raised as webargs would (the same error body; see `api.errors`)."""

    def _raw_load_json(self, req: Any) -> Any:
        if "json_body" in g:
            return g.json_body
        return super()._raw_load_json(req)

    def use_args(self, argmap: Any, req: Any = None, *, location: str | None = None,
                 **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        if not isinstance(argmap, FastLoad) or (location or self.location) != "json" \
                or req is not None or any(v is not None for k, v in kwargs.items()
                                          if k != "unknown"):
            return super().use_args(argmap, req, location=location, **kwargs)

        def decorator(view: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(view)
            def wrapper(*args: Any, **view_kwargs: Any) -> Any:
                return view(*args, load_json_body(argmap), **view_kwargs)

            return wrapper

        return decorator


class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint, parsing with `ParsedBodyParser`; its document lists each
    operation's error responses (`api.openapi`), and a required JSON body must be sent."""

    ARGUMENTS_PARSER = ParsedBodyParser()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # After the arguments' callback, before the one that turns responses into the doc.
        self._prepare_doc_cbks.insert(1, add_error_responses)

    def add_url_rule(self, rule: str, endpoint: str | None = None,
                     view_func: Callable[..., Any] | None = None,
                     provide_automatic_options: bool | None = None, **kwargs: Any) -> None:
        super().add_url_rule(rule, endpoint, view_func, provide_automatic_options, **kwargs)
        for method, doc in self._docs[self._endpoints[-1]].items():
            if method != "parameters":  # tells `api.openapi` that a 404 can answer
                doc["path_arguments"] = "<" in rule

    def arguments(self, schema: Any, *, location: str = "json", required: bool = True,
                  **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """As flask-smorest's, and a required JSON body that is not sent answers 422. webargs
        loads `{}` instead: that reports the missing fields of a create, but a partial
        update (`PUT`) would take it as a no-op, so a missing body that passes is refused."""
        decorator = super().arguments(schema, location=location, required=required, **kwargs)
        if location != "json" or not required:
            return decorator

        def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
            @functools.wraps(view)
            def with_body(*args: Any, **view_kwargs: Any) -> Any:
                if "json_body" not in g:
                    raise MissingBody("the request needs a JSON body",
                                      {"_schema": ["a JSON body is required"]})
                return view(*args, **view_kwargs)

            return decorator(with_body)

        return decorate


class FastLoad(Schema):
    """A schema whose plain bodies skip marshmallow (see the module docstring)."""

    def load(self, data: Any, *, many: bool | None = None, partial: Any = None,
             unknown: UnknownOption | None = None) -> Any:
        if many is None and partial is None and unknown is None and plain(self, data):
            return data
        return super().load(data, many=many, partial=partial, unknown=unknown)


def load_json_body(schema: Schema) -> Any:
    """The request's JSON body loaded with `schema`; a refusal answers 422 as webargs'."""
    try:
        return schema.load(g.json_body if "json_body" in g else {})
    except ValidationError as exc:
        abort(422, exc=exc, messages={"json": exc.messages}, schema=schema)


def plain(schema: Schema, data: Any) -> bool:
    """Whether marshmallow would load `data` with `schema` unchanged (False: let it decide)."""
    if not isinstance(data, dict) or schema._hooks.get("pre_load") \
            or schema._hooks.get("post_load") or schema._hooks.get("validates_schema"):
        return False
    by_key: Mapping[str, fields.Field] = _fields_by_key(schema)
    if any(key not in by_key for key in data):
        return False
    for key, field in by_key.items():
        if key not in data:
            if field.required or field.load_default is not missing:
                return False
        elif not _value_ok(field, data[key]):
            return False
    return True


def _fields_by_key(schema: Schema) -> Mapping[str, fields.Field]:
    cached = schema.__dict__.get("_fast_fields")
    if cached is None:
        cached = {field.data_key or name: field for name, field in schema.load_fields.items()}
        schema.__dict__["_fast_fields"] = cached
    return cached


def _value_ok(field: fields.Field, value: Any) -> bool:
    if value is None:
        return field.allow_none
    kind = type(field)
    if kind is fields.Raw:
        ok = True
    elif kind is fields.String:
        ok = type(value) is str
    elif kind is fields.Integer and field.strict:  # type: ignore[attr-defined]
        ok = type(value) is int
    elif kind is fields.Dict:
        keys, values = field.key_field, field.value_field  # type: ignore[attr-defined]
        ok = type(value) is dict and keys is not None and values is not None and all(
            _value_ok(keys, k) and _value_ok(values, v) for k, v in value.items())
    elif kind is fields.List:
        inner = field.inner  # type: ignore[attr-defined]
        ok = type(value) is list and all(_value_ok(inner, item) for item in value)
    elif kind is fields.Nested and not field.many:  # type: ignore[attr-defined]
        ok = plain(field.schema, value)  # type: ignore[attr-defined]
    else:
        return False
    return ok and all(_within(rule, value) for rule in field.validators)


def _within(rule: Any, value: Any) -> bool:
    if type(rule) is validate.Length and rule.equal is None:
        size = len(value)
        return (rule.min is None or size >= rule.min) and (rule.max is None or size <= rule.max)
    if type(rule) is validate.Range:
        low = rule.min is None or (value >= rule.min if rule.min_inclusive else value > rule.min)
        high = rule.max is None or (value <= rule.max if rule.max_inclusive else value < rule.max)
        return low and high
    return False
