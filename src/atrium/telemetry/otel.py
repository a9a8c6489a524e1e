"""OpenTelemetry traces: the tracer provider built from ``telemetry.tracing``, the instrumentation of the
parts that carry a request (the FastAPI app, the SQLAlchemy engine, the upstream HTTP client), and the
adapter that makes an OpenTelemetry tracer Atrium's ``Tracer`` port (``telemetry/tracing.py``).

Nothing here is global: the provider belongs to one app (or CLI process) and is handed to every
instrumentation explicitly, so two apps in one process (the tests) trace apart and an app with tracing off
installs nothing at all (no middleware, no event listener, no wrapper: the gateway's hot path is the same
code as without OpenTelemetry). Only the current-span context is process-wide, as ``contextvars`` are.

Every exported span passes through :class:`RedactingSpanExporter` first: string attributes, event
attributes (an exception's message and stack trace) and status descriptions are redacted like log records
(``telemetry/logging.py``), so a credential in a URL's query, an error message or a SQL comment never
leaves in a span.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import httpx
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Status, StatusCode
from opentelemetry.util.types import AttributeValue as OtelValue
from sqlalchemy.ext.asyncio import AsyncEngine

from atrium.telemetry.logging import redact
from atrium.telemetry.settings import TracingSettings
from atrium.telemetry.tracing import AttributeValue, Span

log = logging.getLogger(__name__)

TRACER_NAME = "atrium"


# --- export ----------------------------------------------------------------------------------------------

class _Redactor:
    """``redact`` with a memory: span attributes repeat (methods, routes, URLs, SQL statements, model names),
    and the patterns cost far more than a lookup. Bounded: emptied when full."""

    def __init__(self, size: int = 4096) -> None:
        self._seen: dict[str, str] = {}
        self._size = size

    def text(self, value: str) -> str:
        clean = self._seen.get(value)
        if clean is None:
            if len(self._seen) >= self._size:
                self._seen.clear()
            clean = self._seen[value] = redact(value)
        return clean

    def value(self, value: OtelValue) -> OtelValue:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, tuple | list) and value and isinstance(value[0], str):
            return tuple(self.text(item) for item in value)
        return value

    def attributes(self, attributes: Mapping[str, OtelValue] | None) -> dict[str, OtelValue]:
        return {key: self.value(value) for key, value in (attributes or {}).items()}

    def span(self, span: ReadableSpan) -> ReadableSpan:
        """A copy of ``span`` whose string attributes, events and status description are redacted."""
        status = span.status
        if status.description:
            status = Status(status.status_code, self.text(status.description))
        return ReadableSpan(
            name=span.name, context=span.context, parent=span.parent, resource=span.resource,
            attributes=self.attributes(span.attributes),
            events=[Event(event.name, self.attributes(event.attributes), event.timestamp) for event in span.events],
            links=span.links, kind=span.kind, status=status, start_time=span.start_time, end_time=span.end_time,
            instrumentation_scope=span.instrumentation_scope)


class RedactingSpanExporter(SpanExporter):
    """Wraps the real exporter: every span is redacted before it leaves (in the exporter's thread, off the
    request path)."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self._redactor = _Redactor()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([self._redactor.span(span) for span in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def otlp_exporter(settings: TracingSettings) -> SpanExporter:
    """OTLP over HTTP (protobuf) to ``otlp_endpoint``; unset, the exporter's own environment variables."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    headers = {name: value.get_secret_value() for name, value in settings.otlp_headers.items()} or None
    return OTLPSpanExporter(endpoint=settings.otlp_endpoint, headers=headers, timeout=settings.otlp_timeout_s)


def build_tracer_provider(settings: TracingSettings, exporter: SpanExporter | None = None) -> TracerProvider:
    """A provider whose finished spans are batched to ``exporter`` (default: OTLP), redacted first. Sampling:
    ``sample_ratio`` of new traces, and a caller's decision for a trace it started."""
    # The resource without its detectors' thread pool (built on the event loop): ``OTEL_RESOURCE_ATTRIBUTES``
    # and the service name.
    resource = OTELResourceDetector().detect().merge(Resource({SERVICE_NAME: settings.service_name}))
    provider = TracerProvider(resource=resource,
                              sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)))
    provider.add_span_processor(BatchSpanProcessor(RedactingSpanExporter(exporter or otlp_exporter(settings))))
    return provider


# --- instrumentation -------------------------------------------------------------------------------------

def instrument_app(app: Any, provider: TracerProvider, settings: TracingSettings) -> None:
    """Server spans for the app's HTTP and WebSocket requests, named by route template. No span per ASGI
    message (a stream would make one per chunk) and no header is captured."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    excluded = ",".join(f"^{path}$" for path in settings.excluded_paths) or None
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, excluded_urls=excluded,
                                       exclude_spans=["receive", "send"])


class WithinTraces(trace.Tracer):
    """A tracer that starts spans only inside a trace: SQL statements outside any (the job poll, the
    usage recorder's batches, the index upkeep: several a second, all day) make no trace of their own."""

    def __init__(self, inner: trace.Tracer) -> None:
        self.inner = inner

    def start_span(self, name: str, context: Any = None, *args: Any, **kwargs: Any) -> trace.Span:
        if not trace.get_current_span(context).get_span_context().is_valid:
            return trace.INVALID_SPAN
        return self.inner.start_span(name, context, *args, **kwargs)

    @contextlib.contextmanager
    def start_as_current_span(self, name: str, context: Any = None, *args: Any,  # type: ignore[override]
                              **kwargs: Any) -> Iterator[trace.Span]:
        if not trace.get_current_span(context).get_span_context().is_valid:
            yield trace.INVALID_SPAN
            return
        with self.inner.start_as_current_span(name, context, *args, **kwargs) as span:
            yield span


def instrument_engine(engine: AsyncEngine, provider: TracerProvider) -> None:
    """A span per SQL statement on ``engine`` made within a trace (its text, never its parameters). The
    engine's own event listeners, not the instrumentor's process-wide patch of ``create_engine``."""
    from opentelemetry.instrumentation.sqlalchemy import __version__
    from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
    from opentelemetry.metrics import NoOpUpDownCounter

    tracer = WithinTraces(provider.get_tracer("opentelemetry.instrumentation.sqlalchemy", __version__))
    EngineTracer(tracer, engine.sync_engine, NoOpUpDownCounter("db.client.connections.usage"))


def instrument_http_client(client: httpx.AsyncClient, provider: TracerProvider) -> None:
    """A client span per upstream request, with W3C trace context sent along. On the gateway's client the
    direct aiohttp path (``gateway/http_client.py``) is left for httpx's, where the span is made."""
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    from atrium.gateway.http_client import UpstreamClient

    if isinstance(client, UpstreamClient):
        client.direct = False
    HTTPXClientInstrumentor.instrument_client(client, tracer_provider=provider)


# --- the Tracer port -------------------------------------------------------------------------------------

_STATUS = {"ok": StatusCode.OK, "error": StatusCode.ERROR}


class _OtelSpan:
    __slots__ = ("_span",)

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        self._span.set_attribute(key, value)

    def set_status(self, status: str, description: str | None = None) -> None:
        code = _STATUS.get(status, StatusCode.UNSET)
        self._span.set_status(Status(code, description if code is StatusCode.ERROR else None))


class OtelTracer:
    """Atrium's ``Tracer`` port over an OpenTelemetry tracer (statuses ``"ok"``/``"error"`` mapped to
    ``StatusCode``)."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer

    @contextlib.contextmanager
    def start_as_current_span(self, name: str, attributes: Mapping[str, AttributeValue] | None = None,
                              ) -> Iterator[Span]:
        with self.tracer.start_as_current_span(name, attributes=attributes) as span:
            yield _OtelSpan(span)


def current_trace_ids() -> tuple[str, str] | None:
    """``(trace_id, span_id)`` of the current span in W3C hex form, or None outside a recorded span."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")
