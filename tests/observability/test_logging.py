"""Log lines carry the delivery context: one JSON object per line, or text for humans."""

from __future__ import annotations

import dataclasses
import io
import json
import logging

import pytest

from mq.logging import configure_logging
from mq.settings import Settings

CONTEXT = {"message_id": "m-1", "topic": "orders", "subscription_id": "s-1", "attempt": 2,
           "trace_id": "t-9"}


@pytest.fixture
def captured():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield io.StringIO()
    root.handlers[:] = handlers
    root.setLevel(level)


def configure(log_format: str, stream: io.StringIO) -> None:
    """`configure_logging`, with its stderr handler writing to `stream` instead."""
    configure_logging(dataclasses.replace(Settings(), log_format=log_format), "worker")
    logging.getLogger().handlers[0].setStream(stream)  # type: ignore[attr-defined]


def test_json_lines_carry_the_context(captured):
    configure("json", captured)
    logging.getLogger("workers.deliveries").warning("delivery failed: %s", "HTTP 500",
                                                    extra=CONTEXT)
    line = json.loads(captured.getvalue().strip())
    assert line["msg"] == "delivery failed: HTTP 500"
    assert line["level"] == "warning"
    assert {k: line[k] for k in CONTEXT} == CONTEXT


def test_text_lines_show_the_context_before_any_traceback(captured):
    configure("text", captured)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("workers.deliveries").exception("delivery failed", extra=CONTEXT)
    first, *rest = captured.getvalue().splitlines()
    assert first.endswith("delivery failed [message_id=m-1 topic=orders subscription_id=s-1 "
                          "attempt=2 trace_id=t-9]")
    assert "RuntimeError: boom" in rest[-1]
