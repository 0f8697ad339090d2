"""The fields of one message in a publish body, shared by every endpoint that publishes
(immediate, batch, delayed, scheduled)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from api.fields import strict_int
from api.parsing import FastLoad


class MessageFields(FastLoad):
    payload = fields.Raw(required=True, allow_none=True)
    key = fields.String(allow_none=True, validate=validate.Length(max=500))
    headers = fields.Dict(
        keys=fields.String(validate=validate.Length(1, 256)),
        values=fields.String(validate=validate.Length(max=8192)),
        validate=validate.Length(max=100),
    )
    message_id = fields.String(allow_none=True, validate=validate.Length(1, 200))
    correlation_id = fields.String(allow_none=True, validate=validate.Length(max=200))
    trace_id = fields.String(allow_none=True, validate=validate.Length(max=100))
    partition = strict_int(0, 63, allow_none=True)
    content_type = fields.String(allow_none=True, validate=validate.Length(1, 100))
    ttl_ms = strict_int(1, 31_536_000_000, allow_none=True)


class BatchOptions(Schema):
    compression = fields.String(validate=validate.OneOf(("none", "gzip", "zstd")))
    acks = fields.Raw()
    timeout = fields.Integer(strict=True)
