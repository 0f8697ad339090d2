"""Logging set-up: one JSON object per line (default) or plain text for humans."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from mq.settings import Settings

#: Fields that, when passed in `extra=`, are copied into the JSON line.
CONTEXT_FIELDS = ("request_id", "tenant_id", "message_id", "topic", "subscription_id", "attempt",
                  "trace_id", "process")


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: time, level, logger, message and context fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class TextFormatter(logging.Formatter):
    """One plain line for humans, with the context fields given as `name=value` at the end
    (but the pid: the line already names its process)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        context = " ".join(f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS
                           if name != "process" and getattr(record, name, None) is not None)
        return f"{line} [{context}]" if context else line


def configure_logging(settings: Settings, process: str) -> None:
    """Send the root logger to stderr in the configured format, tagged with `process`."""
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "text":
        handler.setFormatter(TextFormatter(f"%(asctime)s {process:<9} %(levelname)-7s "
                                           "%(name)s: %(message)s"))
    else:
        handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
