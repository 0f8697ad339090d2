"""What a stream entry holds: one message, encoded as a single JSON field.

The entry is `{"m": <json>}`; the JSON object uses short keys because it is stored once per
message in Redis memory:
`id` message id, `p` payload, `k` key, `h` headers, `c` correlation id, `t` trace id,
`ct` content type, `ts` publish time (ms), `x` expiry time (ms).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

FIELD = "m"


@dataclass(frozen=True)
class Envelope:
    message_id: str
    payload: Any
    published_ms: int
    key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    correlation_id: str | None = None
    trace_id: str | None = None
    content_type: str = "application/json"
    expires_ms: int | None = None

    def encode(self) -> dict[str, str]:
        return {FIELD: self.encode_data()}

    def encode_data(self, payload_json: str | None = None) -> str:
        """The JSON text of the entry's one field; `payload_json`, the payload's JSON text
        when the caller has it already, is spliced in rather than made again."""
        body: dict[str, Any] = {"id": self.message_id, "ts": self.published_ms}
        if payload_json is None:
            body["p"] = self.payload
        optional = {"k": self.key, "h": self.headers or None, "c": self.correlation_id,
                    "t": self.trace_id, "x": self.expires_ms}
        body.update((k, v) for k, v in optional.items() if v is not None)
        if self.content_type != "application/json":
            body["ct"] = self.content_type
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        return text if payload_json is None else f'{{"p":{payload_json},{text[1:]}'

    @classmethod
    def decode(cls, fields: dict[str, str]) -> Envelope:
        body = json.loads(fields[FIELD])
        return cls(
            message_id=body["id"],
            payload=body.get("p"),
            published_ms=body["ts"],
            key=body.get("k"),
            headers=body.get("h") or {},
            correlation_id=body.get("c"),
            trace_id=body.get("t"),
            content_type=body.get("ct", "application/json"),
            expires_ms=body.get("x"),
        )
