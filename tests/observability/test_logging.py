"""Log lines carry the delivery context: one JSON object per line, or text for humans."""

from __future__ import annotations

import dataclasses
import io
import json
import logging

import httpx
import pytest

from mq.logging import RepeatedFailures, configure_logging
from mq.settings import Settings
from tests.processes import Running, child_env, free_port, wait_until

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


@pytest.mark.e2e
def test_the_api_process_logs_json_lines_with_the_request_id(tmp_path, settings):
    """`mq api` (gunicorn) logs through the same configuration as the other processes: a
    database outage is one JSON line with time, level and the request's id."""
    dead_database = f"postgresql://postgres@127.0.0.1:{free_port()}/none"
    port = free_port()
    api = Running("api", "--host", "127.0.0.1", env=child_env(
        DATABASE_URL=dead_database, REDIS_URL=settings.redis_url, PORT=str(port),
        REDIS_NAMESPACE=settings.redis_namespace, LOG_FORMAT="json"), cwd=tmp_path)
    try:
        url = f"http://127.0.0.1:{port}/api/v1/mq/queues"
        answer = wait_until(lambda: _answer(url), timeout=60)
        assert answer.status_code == 503
        line = api.wait_for_line(r'"request_id": "log-check-1"', timeout=30).string
    finally:
        api.kill()
    logged = json.loads(line)
    assert logged["level"] == "warning" and logged["ts"]
    assert logged["msg"] == "metadata database unreachable: OperationalError"


def _answer(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=10, headers={"Authorization": "Bearer mq_unknown",
                                                   "X-Request-Id": "log-check-1"})
    except httpx.HTTPError:
        return None


def test_a_job_failing_every_tick_is_logged_once_with_a_count_then_its_recovery(caplog):
    logger = logging.getLogger("tests.repeated")
    failures = RepeatedFailures(logger, every_s=3600, outages=(ConnectionError,))
    state = {"down": True, "calls": 0}

    def job() -> None:
        state["calls"] += 1
        if state["down"]:
            raise ConnectionError("database unreachable\nsecond line")

    tick = failures.guard("sweep-outbox", job)
    with caplog.at_level(logging.WARNING, logger="tests.repeated"):
        for _ in range(100):
            tick()
        state["down"] = False
        tick()
        tick()
    assert state["calls"] == 102
    assert [r.getMessage() for r in caplog.records] == [
        "sweep-outbox failed: ConnectionError: database unreachable",
        "sweep-outbox recovered after 100 failures"]
    assert caplog.records[0].exc_info is None  # an outage: no traceback


def test_an_unexpected_failure_keeps_its_traceback_and_reminders_carry_the_count(caplog):
    failures = RepeatedFailures(logging.getLogger("tests.repeated"), every_s=0)

    def job() -> None:
        raise KeyError("bug")

    with caplog.at_level(logging.WARNING, logger="tests.repeated"):
        for _ in range(3):
            failures.run("rebuild", job)
    assert caplog.records[0].exc_info is not None
    assert caplog.records[2].getMessage() == \
        "rebuild still failing (3 times in a row): KeyError: 'bug'"
