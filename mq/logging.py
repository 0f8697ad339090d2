"""Logging set-up: one JSON object per line (default) or plain text for humans."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
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


class RepeatedFailures:
    """Runs periodic jobs and logs their failures the way an outage should be read: the
    first failure of a job as one line (a traceback only for an error that is not an outage
    of a store), then a reminder with the count at most every `every_s`, then the recovery.
    A job that fails on every tick during a database outage would otherwise log a traceback
    on every tick."""

    def __init__(self, logger: logging.Logger, *, every_s: float = 60.0,
                 outages: tuple[type[BaseException], ...] = ()) -> None:
        self.logger = logger
        self.every_s = every_s
        self.outages = outages
        self._failures: dict[str, tuple[int, float]] = {}  # name -> (count, last logged)

    def guard(self, name: str, job: Callable[[], object]) -> Callable[[], None]:
        def run() -> None:
            self.run(name, job)
        return run

    def run(self, name: str, job: Callable[[], object]) -> bool:
        """Run `job`; True when it succeeded."""
        try:
            job()
        except Exception as exc:
            self._failed(name, exc)
            return False
        failed = self._failures.pop(name, None)
        if failed:
            self.logger.warning("%s recovered after %d failures", name, failed[0])
        return True

    def _failed(self, name: str, exc: Exception) -> None:
        count, logged_at = self._failures.get(name, (0, 0.0))
        count += 1
        now = time.monotonic()
        if count == 1:
            self.logger.warning("%s failed: %s: %s", name, type(exc).__name__, _first_line(exc),
                                exc_info=None if isinstance(exc, self.outages) else exc)
            logged_at = now
        elif now - logged_at >= self.every_s:
            self.logger.warning("%s still failing (%d times in a row): %s: %s", name, count,
                                type(exc).__name__, _first_line(exc))
            logged_at = now
        self._failures[name] = (count, logged_at)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]
