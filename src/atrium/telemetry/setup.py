"""One process's telemetry, built once from the ``telemetry`` settings: Prometheus metrics, OpenTelemetry
traces (when on), graph-run tracing (LangSmith when on) and Sentry (with a DSN).

``create_app`` builds it first (the app's middleware needs the metrics, and the FastAPI instrumentation
must be installed before the app starts), ``start``s it in the lifespan (what reads files or the network:
Sentry, the LangSmith client) and hands it to ``build_services``; a CLI command that builds services
without an app gets one built and started there. ``aclose`` flushes and releases what it holds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from sqlalchemy.ext.asyncio import AsyncEngine

from atrium.telemetry import otel
from atrium.telemetry.graph_runs import GraphRunTracing
from atrium.telemetry.metrics import Metrics
from atrium.telemetry.settings import TelemetrySettings
from atrium.telemetry.tracing import NOOP_TRACER, Tracer

log = logging.getLogger(__name__)


@dataclass
class Telemetry:
    settings: TelemetrySettings
    metrics: Metrics
    provider: TracerProvider | None = None  # None: tracing off, nothing instrumented
    graph_runs: GraphRunTracing = field(default_factory=GraphRunTracing)
    sentry: Any = None  # a SentryReporter when a DSN is set

    @classmethod
    def build(cls, settings: TelemetrySettings, *, span_exporter: SpanExporter | None = None,
              metrics: Metrics | None = None) -> Telemetry:
        """``span_exporter`` replaces the OTLP exporter (tests pass an in-memory one); with tracing off it
        is not used."""
        provider = (otel.build_tracer_provider(settings.tracing, span_exporter) if settings.tracing.enabled
                    else None)
        tracer: Tracer = NOOP_TRACER if provider is None else otel.OtelTracer(provider.get_tracer(otel.TRACER_NAME))
        return cls(settings=settings, metrics=metrics or Metrics(), provider=provider,
                   graph_runs=GraphRunTracing(tracer))

    async def start(self) -> None:
        """Install Sentry (with a DSN) and connect LangSmith (when enabled), in threads: both read files."""
        await anyio.to_thread.run_sync(self.graph_runs.connect, self.settings.langsmith)
        if self.settings.sentry.dsn is not None and self.sentry is None:
            from atrium.telemetry.sentry import SentryReporter

            self.sentry = await anyio.to_thread.run_sync(SentryReporter, self.settings.sentry)

    @property
    def tracing(self) -> bool:
        return self.provider is not None

    @property
    def tracer(self) -> Tracer:
        """Atrium's ``Tracer`` port (no-op with tracing off)."""
        return self.graph_runs.tracer

    @property
    def otel_tracer(self) -> trace.Tracer | None:
        """The OpenTelemetry tracer for the gateway's spans; None with tracing off."""
        return self.provider.get_tracer(otel.TRACER_NAME) if self.provider is not None else None

    def instrument_app(self, app: Any) -> None:
        if self.provider is not None:
            otel.instrument_app(app, self.provider, self.settings.tracing)

    def instrument_engine(self, engine: AsyncEngine) -> None:
        if self.provider is not None and self.settings.tracing.capture_sql:
            otel.instrument_engine(engine, self.provider)

    def instrument_http_client(self, client: httpx.AsyncClient) -> None:
        if self.provider is not None:
            otel.instrument_http_client(client, self.provider)

    async def aclose(self) -> None:
        """Export the spans still batched, send LangSmith's runs and Sentry's events (in threads: each
        blocks on the network)."""
        if self.provider is not None:
            await anyio.to_thread.run_sync(self.provider.shutdown)
        await anyio.to_thread.run_sync(self.graph_runs.flush)
        if self.sentry is not None:
            await anyio.to_thread.run_sync(self.sentry.close)
