"""Trace context: W3C `traceparent` / `tracestate` carried with every message, and the
process's OpenTelemetry spans when tracing is on.

A publish stores the trace context in the message's headers (`with_trace`), so every delivery
attempt, retry and redrive carries it: webhooks send it as HTTP headers, function handlers find
it in `headers`. With the `otel` extra installed and an exporter configured through the
standard `OTEL_*` variables (`Settings.tracing_enabled`), `Tracing.configure` sets up the
OpenTelemetry SDK and the API, workers and scheduler export spans named and attributed after
OpenTelemetry's messaging semantic conventions: `send <topic>` (producer) per publish,
`process <topic>` (consumer) per delivery attempt, a child of the stored context, and the
webhook's `POST` (client). Without it, `Tracing()` is off: no SDK is imported and every call
below returns at its first line.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from mq.settings import Settings

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
#: version-traceid-parentid-flags; a later version may append fields after a dash.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
#: W3C: a vendor may send up to 32 list members; 512 characters is the size to propagate.
MAX_TRACESTATE = 512
#: `messaging.system` of our spans (the conventions allow a value of one's own).
MESSAGING_SYSTEM = "mq"


@dataclass(frozen=True)
class TraceContext:
    """A valid W3C trace context."""

    traceparent: str
    tracestate: str | None = None

    @property
    def trace_id(self) -> str:
        return self.traceparent[3:35]

    @classmethod
    def parse(cls, traceparent: Any, tracestate: Any = None) -> TraceContext | None:
        """The context, or None for an invalid `traceparent` (W3C: ignore it, no error).
        A `tracestate` that is not a reasonable string is dropped, the parent kept."""
        if not isinstance(traceparent, str):
            return None
        match = _TRACEPARENT.fullmatch(traceparent.strip())
        if match is None:
            return None
        version, trace_id, parent_id, _flags, rest = match.groups()
        if version == "ff" or (version == "00" and rest) or not int(trace_id, 16) \
                or not int(parent_id, 16):
            return None
        state = tracestate.strip() if isinstance(tracestate, str) else None
        if not state or len(state) > MAX_TRACESTATE or not state.isascii():
            state = None
        return cls(match.group(0)[:55] if version == "00" else match.group(0), state)

    @classmethod
    def of_headers(cls, headers: Mapping[str, Any] | None) -> TraceContext | None:
        if not headers or TRACEPARENT not in headers:
            return None
        return cls.parse(headers.get(TRACEPARENT), headers.get(TRACESTATE))

    def as_headers(self) -> dict[str, str]:
        headers = {TRACEPARENT: self.traceparent}
        if self.tracestate:
            headers[TRACESTATE] = self.tracestate
        return headers


def incoming(environ: Mapping[str, Any]) -> TraceContext | None:
    """The trace context of a WSGI request."""
    traceparent = environ.get("HTTP_TRACEPARENT")
    return None if traceparent is None else \
        TraceContext.parse(traceparent, environ.get("HTTP_TRACESTATE"))


def with_trace(message: dict[str, Any], fallback: TraceContext | None, *,
               replace: bool = False) -> dict[str, Any]:
    """The message's fields with its trace context settled: its own valid
    `headers.traceparent` (unless `replace`), else `fallback`'s, written into its headers; a
    message without `trace_id` takes the context's trace id. The message is not changed."""
    headers = message.get("headers") or {}
    own = None if replace else TraceContext.of_headers(headers)
    context = own or fallback
    if context is None:
        return message
    traced = dict(message)
    if context is not own:
        kept = {k: v for k, v in headers.items() if k not in (TRACEPARENT, TRACESTATE)}
        traced["headers"] = {**kept, **context.as_headers()}
    if not traced.get("trace_id"):
        traced["trace_id"] = context.trace_id
    return traced


class Tracing:
    """This process's spans: OpenTelemetry's tracer when tracing is on, else nothing."""

    def __init__(self, tracer: Any = None, provider: Any = None) -> None:
        self.tracer = tracer
        self.provider = provider

    @property
    def on(self) -> bool:
        return self.tracer is not None

    @classmethod
    def configure(cls, settings: Settings, service_name: str) -> Tracing:
        """The SDK set up from `settings`, or off when tracing is not asked for (or the
        `otel` extra is not installed, which is logged)."""
        if not settings.tracing_enabled:
            return cls()
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ImportError:
            log.warning("OTEL_* asks for traces but the otel extra is not installed "
                        "(pip install 'mq-service[otel]'): no spans are exported")
            return cls()
        resource = Resource.create({"service.name": settings.otel_service_name or service_name})
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(_exporter(settings)))
        return cls(provider.get_tracer("mq"), provider)

    def span(self, name: str, kind: str, parent: TraceContext | None = None,
             attributes: Mapping[str, Any] | None = None
             ) -> contextlib.AbstractContextManager[TraceContext | None]:
        """A span around the block (the current one while it runs), a child of `parent`
        when given, else of the current span; the block gets its own context to propagate
        (None when tracing is off). An exception leaving the block marks the span failed."""
        if self.tracer is None:
            return _NO_SPAN
        return self._span(name, kind, parent, attributes)

    @contextlib.contextmanager
    def _span(self, name: str, kind: str, parent: TraceContext | None,
              attributes: Mapping[str, Any] | None) -> Iterator[TraceContext | None]:
        from opentelemetry.trace import SpanKind

        context = _extracted(parent) if parent is not None else None
        with self.tracer.start_as_current_span(name, context=context,
                                               kind=getattr(SpanKind, kind),
                                               attributes=dict(attributes or {})):
            yield current_context()

    def producer(self, topic: str, parent: TraceContext | None,
                 **attributes: Any) -> contextlib.AbstractContextManager[TraceContext | None]:
        """A publish's `send <topic>` span (`attributes` as `messaging_attributes`' more)."""
        if self.tracer is None:
            return _NO_SPAN
        return self._span(f"send {topic}", "PRODUCER", parent, messaging_attributes(
            "send", topic, messaging__operation__name="publish", **attributes))

    @staticmethod
    def annotate(**attributes: Any) -> None:
        """Set attributes on the current span (does nothing without one; `a__b` names
        `a.b`)."""
        from opentelemetry import trace

        trace.get_current_span().set_attributes(_dotted(attributes))

    def shutdown(self) -> None:
        """Export what is buffered (at process exit)."""
        if self.provider is not None:
            self.provider.shutdown()


_NO_SPAN: contextlib.nullcontext[None] = contextlib.nullcontext()


def current_context() -> TraceContext | None:
    """The current span's context as W3C headers."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return TraceContext.parse(carrier.get(TRACEPARENT), carrier.get(TRACESTATE))


def messaging_attributes(operation: str, topic: str, **more: Any) -> dict[str, Any]:
    """The messaging conventions' attributes of a span (`more`: `a__b` names `a.b`)."""
    return {"messaging.system": MESSAGING_SYSTEM, "messaging.operation.type": operation,
            "messaging.destination.name": topic, **_dotted(more)}


def _dotted(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes given as keywords, named with dots (`a__b` is `a.b`), None left out."""
    return {name.replace("__", "."): value for name, value in attributes.items()
            if value is not None}


def _extracted(parent: TraceContext) -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator().extract(parent.as_headers())


def _exporter(settings: Settings) -> Any:
    """The span exporter `OTEL_TRACES_EXPORTER` names: `console`, or OTLP over HTTP (the
    exporter reads its endpoint, headers and timeout from the standard variables)."""
    if settings.otel_traces_exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()
