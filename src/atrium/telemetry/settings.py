"""The ``telemetry`` section: log format, OpenTelemetry traces, LangSmith tracing of graph runs, Sentry.
Composed into ``Settings`` by ``atrium.settings``; built into running parts by ``telemetry/setup.py``.

Everything that sends data off the machine is off by default: no span, graph run or error leaves the
process unless its switch is set here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator

LogFormat = Literal["text", "json"]


class TracingSettings(BaseModel):
    """OpenTelemetry traces: server spans (FastAPI), the gateway's calls and each provider attempt, the
    upstream HTTP requests (httpx), SQL statements (SQLAlchemy), the assistant graph's nodes and background
    jobs. ``enabled`` turns spans on; ``otlp_endpoint`` (OTLP over HTTP, e.g.
    ``http://collector:4318/v1/traces``) is where they go; unset, the standard ``OTEL_EXPORTER_OTLP_*``
    variables are read, as the OTLP exporter does. ``sample_ratio``: the share of new traces kept (a trace a
    caller started with ``traceparent`` follows the caller's decision). ``capture_sql``: SQL statements as
    spans (their text, never their parameters)."""

    enabled: bool = False
    service_name: str = Field("atrium", min_length=1, max_length=200)
    otlp_endpoint: str | None = None
    otlp_headers: dict[str, SecretStr] = Field(default_factory=dict)  # e.g. an Authorization for the collector
    otlp_timeout_s: float = Field(10.0, gt=0)
    sample_ratio: float = Field(1.0, ge=0, le=1)
    capture_sql: bool = True
    excluded_paths: list[str] = Field(default_factory=lambda: ["/health", "/ready", "/metrics"])

    @field_validator("otlp_endpoint")
    @classmethod
    def _endpoint_shape(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("telemetry.tracing.otlp_endpoint must be an http(s) URL")
        return value or None


class LangSmithSettings(BaseModel):
    """LangSmith tracing of graph runs (the assistant, the agents API's runs, guided flows). Off: no run is
    sent, even when ``LANGSMITH_TRACING`` is set in the environment. On: runs go to ``endpoint`` with
    ``api_key`` under ``project``; unset, the LangSmith client reads ``LANGSMITH_ENDPOINT``,
    ``LANGSMITH_API_KEY`` and ``LANGSMITH_PROJECT`` from the environment. Inputs and outputs are redacted
    of credentials before they leave; they do carry conversation text (that is what LangSmith shows)."""

    enabled: bool = False
    project: str | None = None
    endpoint: str | None = None
    api_key: SecretStr | None = None


class SentrySettings(BaseModel):
    """Sentry error reporting: with a ``dsn``, every error logged (an unhandled exception answered 500, a
    failed job, ...) becomes a Sentry event, redacted of credentials like every log record; no request
    body, cookie or local variable is sent. ``traces_sample_rate`` stays 0: traces go through OpenTelemetry."""

    dsn: SecretStr | None = None
    environment: str | None = None
    release: str | None = None

    @field_validator("dsn")
    @classmethod
    def _empty_is_unset(cls, value: SecretStr | None) -> SecretStr | None:
        return value if value is not None and value.get_secret_value() else None


class TelemetrySettings(BaseModel):
    """``log_format``: ``text`` (key=value lines) or ``json`` (one object per line, with ``request_id``,
    ``trace_id`` and ``span_id`` keys on every line, null outside a request or a span)."""

    log_format: LogFormat = "text"
    tracing: TracingSettings = TracingSettings()
    langsmith: LangSmithSettings = LangSmithSettings()
    sentry: SentrySettings = SentrySettings()
