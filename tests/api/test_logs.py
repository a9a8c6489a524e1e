"""The log lines Atrium writes (``configure_logging``: what ``atrium serve`` installs), in both formats, at
DEBUG, while real requests carry API keys, a password and bearer tokens in headers, bodies, query strings
and paths, with failures and a crash among them (the flows of the secret-hygiene test): no secret is on any
line. JSON lines all parse and carry ``request_id``, ``trace_id`` and ``span_id``; a request's lines carry
its request id and the trace id of its server span."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from fastapi import FastAPI
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from atrium.app import create_app
from atrium.telemetry.logging import LogFormat, configure_logging
from tests.conftest import LiveServer, free_port, make_settings
from tests.fault_upstream import FaultUpstream
from tests.integration.test_secret_hygiene import (
    ADMIN_KEY,
    JWT_SECRET,
    ODD_PROVIDER_KEY,
    PASSWORD,
    PROVIDER_KEY,
    crash,
    gateway,
    run_flows,
)


@pytest.fixture
def log_lines() -> Iterator[io.StringIO]:
    """``configure_logging``'s handler writes here for the test; the logging set-up is restored after."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("httpx").level, structlog.get_config())
    buffer = io.StringIO()
    yield buffer
    root.handlers[:], root.level = saved[0], saved[1]
    logging.getLogger("httpx").setLevel(saved[2])
    structlog.configure(**saved[3])


def decoded_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for item in value.values() for text in decoded_strings(item)]
    if isinstance(value, list):
        return [text for item in value for text in decoded_strings(item)]
    return []


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_no_secret_reaches_a_log_line_at_debug_in_either_format(
        tmp_path: Path, log_lines: io.StringIO, fmt: LogFormat) -> None:
    exporter = InMemorySpanExporter()
    secrets = {"provider_key": PROVIDER_KEY, "odd_provider_key": ODD_PROVIDER_KEY, "admin_key": ADMIN_KEY,
               "password": PASSWORD, "jwt_secret": JWT_SECRET}
    async with FaultUpstream() as upstream:
        settings = await asyncio.to_thread(
            make_settings, tmp_path / "data", bootstrap_admin_key=ADMIN_KEY, auth={"jwt_secret": JWT_SECRET},
            gateway=gateway(upstream), log_level="debug",
            telemetry={"log_format": fmt, "tracing": {"enabled": True}})
        configure_logging(settings.log_level, settings.telemetry.log_format, stream=log_lines)
        app: FastAPI = create_app(settings, span_exporter=exporter)
        app.add_api_route("/hygiene/crash", crash)
        async with LiveServer(app, free_port()) as server, \
                httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                                  timeout=30) as http:
            await run_flows(http, secrets)  # adds the created key, access and refresh tokens to ``secrets``
            logging.getLogger("atrium.test").debug("a debug line naming %s", secrets["created_key"])
    written = log_lines.getvalue()
    assert {"access_token", "created_key", "refresh_token"} <= secrets.keys()
    assert len(written.splitlines()) > 50 and "crashed holding" in written  # the crash was logged
    assert "a debug line naming" in written  # DEBUG lines were written
    leaked = {name for name, secret in secrets.items() if secret in written}
    assert leaked == set()
    if fmt == "text":
        return

    lines = [json.loads(line) for line in written.splitlines()]  # every line is one JSON object
    assert all({"timestamp", "level", "logger", "message", "request_id", "trace_id", "span_id"} <= line.keys()
               for line in lines)
    strings = "\n".join(text for line in lines for text in decoded_strings(line))
    assert {name for name, secret in secrets.items() if secret in strings} == set()  # unescaped, too
    server_spans = {format(span.context.trace_id, "032x"): span for span in exporter.get_finished_spans()
                    if span.kind is SpanKind.SERVER}
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert len(access) > 20
    for line in access:  # each request's line: its request id, the trace of its server span
        span = server_spans[line["trace_id"]]
        assert span.attributes["atrium.request_id"] == line["request_id"]
    [crashed] = [line for line in lines if line["message"] == "unhandled error"]
    assert crashed["level"] == "error" and "RuntimeError" in crashed["exception"]
    assert crashed["trace_id"] in server_spans and crashed["request_id"] is not None
