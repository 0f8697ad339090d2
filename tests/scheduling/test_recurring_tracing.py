"""The scheduler's spans: each recurring run is published in a `send` span, a child of the
trace the schedule was created in, and the run's message carries that span's context."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from mq.tracing import Tracing
from scheduler.recurring import Recurring
from tests.conftest import TenantHandle
from tests.scheduling.test_recovery import Parts, _ms, parts  # noqa: F401  (the fixture)

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def test_a_recurring_run_is_a_producer_span_in_the_schedule_s_trace(
        tenant: TenantHandle, parts: Parts) -> None:  # noqa: F811
    topic = tenant.create_queue()
    created = tenant.admin.post("/publish/scheduled", {
        "topic": topic["name"], "cron": "*/1 * * * * *", "payload": 1},
        headers={"traceparent": PARENT}).json
    exported = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    recurring = Recurring(parts.redis, parts.keys, parts.database, parts.publisher,
                          tracing=Tracing(provider.get_tracer("mq"), provider))
    assert recurring.fire_due() >= 1
    run_id = f"{created['schedule_id']}:{_ms(created['next_run_at'])}"
    [span] = [s for s in exported.get_finished_spans()
              if s.attributes.get("messaging.message.id") == run_id]
    assert (span.name, span.kind) == (f"send {topic['name']}", SpanKind.PRODUCER)
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert f"{span.parent.span_id:016x}" == PARENT[36:52]
    run = parts.record(tenant.id, run_id)
    assert run.headers["traceparent"] == f"00-{TRACE_ID}-{span.context.span_id:016x}-01"
    assert run.trace_id == TRACE_ID
