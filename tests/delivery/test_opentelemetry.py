"""OpenTelemetry end to end: the API (in process, the SDK's in-memory exporter) exports a
producer span per publish; a real worker process, configured only through the standard
`OTEL_*` variables, exports a consumer span per attempt and the webhook's client span over
OTLP/HTTP to a local collector. One publish and its deliveries form one trace."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from mq.tracing import Tracing
from tests.processes import wait_until

pytestmark = pytest.mark.single_redis

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
PARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"
KINDS = {3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


@dataclass
class ExportedSpan:
    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    failed: bool


class Collector:
    """An OTLP/HTTP trace receiver: what processes export, decoded."""

    def __init__(self) -> None:
        self.spans: list[ExportedSpan] = []
        self.lock = threading.Lock()

    def add(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            service = _attributes(resource_spans.resource.attributes)["service.name"]
            for scope in resource_spans.scope_spans:
                with self.lock:
                    self.spans += [ExportedSpan(
                        service, span.name, KINDS.get(span.kind, str(span.kind)),
                        span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex(),
                        _attributes(span.attributes), span.status.code == 2)
                        for span in scope.spans]

    def named(self, name: str, trace_id: str) -> list[ExportedSpan]:
        """The spans called `name` in one trace (the worker also delivers other tests'
        leftover messages of the shared database, in traces of their own)."""
        with self.lock:
            return [span for span in self.spans
                    if span.name == name and span.trace_id == trace_id]


def _attributes(pairs: Any) -> dict[str, Any]:
    values = {}
    for pair in pairs:
        kind = pair.value.WhichOneof("value")
        values[pair.key] = getattr(pair.value, kind) if kind else None
    return values


@pytest.fixture(scope="module")
def collector() -> Iterator[tuple[Collector, str]]:
    found = Collector()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            found.add(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            body = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield found, f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    server.shutdown()


@pytest.fixture(scope="module")
def exported() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture(scope="module")
def app(settings, exported):
    """The API with tracing on, exporting to memory."""
    from api import create_app

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exported))
    return create_app(settings, tracing=Tracing(provider.get_tracer("mq"), provider))


def test_a_publish_and_its_deliveries_form_one_trace(
        tenant, subscriptions, webhook, processes, collector, exported) -> None:
    found, endpoint = collector
    tenant.create_queue("traced")
    subscriptions.create("traced", "receiver", webhook.url("/traced"))
    webhook.script("/traced", [503])
    processes.scheduler()
    processes.worker(env={"OTEL_TRACES_EXPORTER": "otlp",
                          "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint,
                          "OTEL_BSP_SCHEDULE_DELAY": "100"})
    answer = tenant.admin.post("/publish", {"topic": "traced", "payload": {"n": 1}},
                               headers={"traceparent": PARENT, "tracestate": "k=v"})
    assert answer.status_code == 201, answer.json

    # The API's producer span: a child of the caller's span, in the caller's trace.
    [send] = [s for s in exported.get_finished_spans() if s.name == "send traced"]
    assert send.kind is SpanKind.PRODUCER
    assert f"{send.context.trace_id:032x}" == TRACE_ID
    assert f"{send.parent.span_id:016x}" == CALLER_SPAN
    assert send.attributes["messaging.system"] == "mq"
    assert send.attributes["messaging.operation.type"] == "send"
    assert send.attributes["messaging.destination.name"] == "traced"
    assert send.attributes["messaging.message.id"] == answer.json["message_id"]
    send_id = f"{send.context.span_id:016x}"

    # Two attempts (503, then 200): each a consumer span, a child of the publish's span,
    # with the webhook's client span under it; the webhook sees the client span as parent.
    requests = webhook.wait_for("/traced", 2)
    process = wait_until(lambda: len(found.named("process traced", TRACE_ID)) >= 2
                         and len(found.named("POST", TRACE_ID)) >= 2
                         and found.named("process traced", TRACE_ID))
    posts = found.named("POST", TRACE_ID)
    assert {(s.trace_id, s.parent_id, s.kind, s.service) for s in process} \
        == {(TRACE_ID, send_id, "CONSUMER", "mq-worker")}
    assert sorted(s.attributes["mq.delivery.attempt"] for s in process) == [1, 2]
    assert {s.attributes["messaging.message.id"] for s in process} == {answer.json["message_id"]}
    assert {s.attributes["messaging.operation.type"] for s in process} == {"process"}
    assert [s.failed for s in sorted(process, key=lambda s: s.attributes[
        "mq.delivery.attempt"])] == [True, False]
    assert {s.parent_id for s in posts} == {s.span_id for s in process}
    assert sorted(s.attributes["http.response.status_code"] for s in posts) == [200, 503]
    assert {s.kind for s in posts} == {"CLIENT"}
    sent = {r.headers["traceparent"] for r in requests}
    assert sent == {f"00-{TRACE_ID}-{s.span_id}-01" for s in posts}
    assert {r.headers["tracestate"] for r in requests} == {"k=v"}
    assert send.status.status_code is not StatusCode.ERROR


def test_a_worker_without_tracing_forwards_the_stored_context(
        tenant, subscriptions, webhook, processes) -> None:
    tenant.create_queue("plain")
    subscriptions.create("plain", "receiver", webhook.url("/plain"))
    processes.worker()
    answer = tenant.admin.post("/publish", {"topic": "plain", "payload": 1},
                               headers={"traceparent": PARENT})
    [request] = webhook.wait_for("/plain", 1)
    # The worker forwards the context as stored: the API's producer span, in the caller's trace.
    stored = tenant.admin.get(f"/messages/{answer.json['message_id']}").json["headers"]
    assert request.headers["traceparent"] == stored["traceparent"]
    assert stored["traceparent"].startswith(f"00-{TRACE_ID}-")
