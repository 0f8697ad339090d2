"""What a subscription's delivery is configured with, validated: `handler_config` per handler
type, and `message_filter`.

A config validator receives the raw object and the settings and returns the object to store,
or raises marshmallow's `ValidationError` with messages keyed by field. Each handler type
registers its validator next to its factory in `handlers.registry`.
"""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate, validates
from marshmallow import ValidationError as InvalidFields

from formats.json_schema import checked_schema
from formats.problems import SchemaDefinitionError
from handlers.database import OPERATIONS, config_problems
from handlers.filters import FilterPolicyError, compile_policy
from handlers.function import reference_problem
from handlers.signing import secret_problem
from handlers.transform import TransformError, compile_expression
from handlers.urls import WebhookURLError, check_webhook_url
from mq.settings import Settings

MAX_HEADERS = 100


def _header_name(name: str) -> bool:
    return bool(name) and all(33 <= ord(ch) <= 126 and ch != ":" for ch in name)


class PipelineFields(Schema):
    """Options every handler may carry (see `handlers.pipeline`), checked here so that no
    delivery ever fails on an unusable schema or expression."""

    type = fields.String(required=True)
    schema = fields.Dict(allow_none=True)
    transform = fields.String(allow_none=True, validate=validate.Length(max=10_000))
    #: Echoed back by clients that PUT what they read; ignored.
    secret_set = fields.Boolean(load_only=True)

    @validates("schema")
    def check_schema(self, value: dict[str, Any] | None, **_: Any) -> None:
        if value is not None:
            try:
                checked_schema(value)
            except SchemaDefinitionError as exc:
                raise InvalidFields(str(exc)) from None

    @validates("transform")
    def check_transform(self, value: str | None, **_: Any) -> None:
        if value is not None:
            try:
                compile_expression(value)
            except TransformError as exc:
                raise InvalidFields(str(exc)) from None


class HttpConfig(PipelineFields):
    url = fields.String(required=True, validate=validate.Length(1, 2048))
    headers = fields.Dict(keys=fields.String(validate=validate.Length(1, 256)),
                          values=fields.String(validate=validate.Length(max=8192)),
                          load_default=dict)
    timeout_ms = fields.Integer(strict=True, validate=validate.Range(1, 300_000),
                                load_default=30_000)
    #: `"generate"`: a new `whsec_` secret, answered once (`handlers.signing`).
    secret = fields.String(allow_none=True, validate=validate.Length(1, 1024))
    envelope = fields.Boolean()

    @validates("secret")
    def check_secret(self, value: str | None, **_: Any) -> None:
        problem = secret_problem(value) if value else None
        if problem:
            raise InvalidFields(problem)

    @validates("headers")
    def check_headers(self, value: dict[str, str], **_: Any) -> None:
        if len(value) > MAX_HEADERS:
            raise InvalidFields(f"at most {MAX_HEADERS} headers")
        bad = [name for name in value if not _header_name(name)]
        if bad:
            raise InvalidFields(f"not a valid header name: {bad[0]!r}")
        bad = [name for name, text in value.items() if "\r" in text or "\n" in text]
        if bad:
            raise InvalidFields(f"header {bad[0]!r} holds a line break")


def validate_http(raw: dict[str, Any], settings: Settings) -> dict[str, Any]:
    config = HttpConfig().load(raw)
    config.pop("secret_set", None)
    try:
        check_webhook_url(config["url"], allow_private=settings.mq_webhook_allow_private)
    except WebhookURLError as exc:
        raise InvalidFields({"url": [str(exc)]}) from None
    if config.get("secret") is None:
        config.pop("secret", None)
    return config


class FunctionConfig(PipelineFields):
    function = fields.String(required=True, validate=validate.Length(1, 500))


def validate_function(raw: dict[str, Any], settings: Settings) -> dict[str, Any]:
    config = FunctionConfig().load(raw)
    config.pop("secret_set", None)
    problem = reference_problem(config["function"], settings)
    if problem:
        raise InvalidFields({"function": [problem]})
    return config


def _names(most: int) -> fields.Dict:
    """column -> message path."""
    return fields.Dict(keys=fields.String(validate=validate.Length(1, 200)),
                       values=fields.String(validate=validate.Length(1, 500)),
                       validate=validate.Length(max=most))


class DatabaseConfig(PipelineFields):
    target = fields.String(required=True, validate=validate.Length(1, 200))
    table = fields.String(required=True, validate=validate.Length(1, 200))
    operation = fields.String(required=True, validate=validate.OneOf(OPERATIONS))
    mapping = _names(1000)
    criteria = _names(100)
    conflict_columns = fields.List(fields.String(validate=validate.Length(1, 200)),
                                   validate=validate.Length(1, 100))


def validate_database(raw: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """The shape first, then the table and columns against the target's schema."""
    config = DatabaseConfig().load(raw)
    config.pop("secret_set", None)
    problems = config_problems(config, settings)
    if problems:
        raise InvalidFields(problems)
    return config


class MessageFilter(fields.Dict):
    """`message_filter`: an SNS-style policy, checked by `handlers.filters`."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        policy = super()._deserialize(value, attr, data, **kwargs)
        try:
            compile_policy(policy)
        except FilterPolicyError as exc:
            raise InvalidFields(exc.problems) from None
        return policy
