"""OpenTelemetry traces through real requests: the app served by uvicorn on a loopback port, the gateway in
front of a local fake upstream (tests/fault_upstream.py), spans caught by the SDK's InMemorySpanExporter
(injected like a model adapter) or sent by the real OTLP exporter to a local receiver.

A chat through the gateway is one trace: the server span, ``gateway.chat``, the provider attempt
``gateway.provider``, the HTTP client span of the upstream request (whose ``traceparent`` reaches the
upstream); an ingestion job has its span with its SQL beneath it. Tracing is off by default and then
nothing is instrumented at all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from sqlalchemy import func, select

from atrium.app import create_app
from atrium.gateway.http_client import UpstreamClient
from atrium.store.models import UsageRecord
from tests.api.helpers import upload, wait_job
from tests.conftest import ADMIN_KEY, LiveServer, free_port, make_settings
from tests.fault_upstream import FaultUpstream
from tests.gateway_helpers import gateway_config
from tests.receivers import Receiver

SECRET_IN_QUERY = "qs-secret-value-8841"


def traced_settings(tmp_path: Path, upstream: FaultUpstream, **tracing: Any) -> Any:
    return make_settings(tmp_path / "data", gateway=gateway_config(upstream),
                         telemetry={"tracing": {"enabled": True, **tracing}})


@contextlib.asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[tuple[LiveServer, httpx.AsyncClient]]:
    async with LiveServer(app, free_port()) as server, \
            httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                              timeout=30) as http:
        yield server, http


def by_name(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def parent_of(span: ReadableSpan, spans: list[ReadableSpan]) -> ReadableSpan:
    assert span.parent is not None, f"{span.name} has no parent"
    [parent] = [s for s in spans if s.context is not None and s.context.span_id == span.parent.span_id]
    return parent


async def finished(exporter: InMemorySpanExporter, name: str, timeout: float = 10.0) -> list[ReadableSpan]:
    """The exported spans once one named ``name`` is among them (the batch processor exports in a thread)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        spans = list(exporter.get_finished_spans())
        if by_name(spans, name):
            return spans
        await asyncio.sleep(0.05)
    raise AssertionError(f"no span {name!r} among {[s.name for s in exporter.get_finished_spans()]}")


@pytest.mark.parametrize("stream", [False, True])
async def test_a_chat_through_the_gateway_is_one_trace_down_to_the_upstream_request(
        tmp_path: Path, upstream: FaultUpstream, stream: bool) -> None:
    exporter = InMemorySpanExporter()
    settings = await asyncio.to_thread(traced_settings, tmp_path, upstream)
    app = create_app(settings, span_exporter=exporter)
    async with serve(app) as (server, http):
        client = server.services.http_client
        assert isinstance(client, UpstreamClient) and not client.direct  # traced: through httpx's path
        answer = await http.post("/v1/chat/completions", headers={"X-Request-ID": "req-trace-1"}, json={
            "model": "good", "stream": stream, "messages": [{"role": "user", "content": "Hello there"}]})
        assert answer.status_code == 200, answer.text
        await answer.aread()
        # the span processor exports in batches: shut down with the app, everything is exported
    spans = list(exporter.get_finished_spans())

    [server_span] = [s for s in spans if s.kind is SpanKind.SERVER and s.name == "POST /v1/chat/completions"]
    [chat] = by_name(spans, "gateway.chat")
    [attempt] = by_name(spans, "gateway.provider")
    [client_span] = [s for s in spans if s.kind is SpanKind.CLIENT and s.name == "POST"]
    assert parent_of(chat, spans) is server_span
    assert parent_of(attempt, spans) is chat
    assert parent_of(client_span, spans) is attempt
    trace_id = server_span.context.trace_id
    assert {s.context.trace_id for s in (chat, attempt, client_span)} == {trace_id}
    assert server_span.attributes["atrium.request_id"] == "req-trace-1"
    assert server_span.attributes["http.route"] == "/v1/chat/completions"
    assert attempt.kind is SpanKind.CLIENT
    assert (attempt.attributes["atrium.provider"], attempt.attributes["gen_ai.request.model"]) == ("up", "good")
    assert chat.attributes["gen_ai.response.model"] == "good" and chat.attributes["atrium.outcome"] == "ok"
    assert chat.attributes["gen_ai.usage.output_tokens"] > 0 and chat.status.status_code is StatusCode.OK
    assert [event.name for event in chat.events] == ["first_token"]
    assert client_span.attributes["http.url"].startswith(upstream.base_url + "/chat/completions")
    # the trace went on to the upstream with the request (W3C trace context)
    [sent] = [r for r in upstream.requests if r.path.endswith("/chat/completions")]
    assert sent.headers["traceparent"].split("-")[1] == format(trace_id, "032x")
    # the request's own SQL (authentication, metering...) is in the trace; no span names a prompt
    assert all("Hello there" not in str(s.attributes) for s in spans)


async def test_a_failed_attempt_and_its_fallback_are_sibling_attempts_of_one_call(
        tmp_path: Path, upstream: FaultUpstream) -> None:
    exporter = InMemorySpanExporter()
    settings = await asyncio.to_thread(traced_settings, tmp_path, upstream)
    async with serve(create_app(settings, span_exporter=exporter)) as (_server, http):
        answer = await http.post("/v1/chat/completions", json={
            "model": "resilient", "messages": [{"role": "user", "content": "Hello"}]})
        assert answer.status_code == 200, answer.text
    spans = list(exporter.get_finished_spans())
    [chat] = by_name(spans, "gateway.chat")
    attempts = by_name(spans, "gateway.provider")
    # "flaky" answers 503: two attempts (retry.attempts = 2), then "good" serves
    assert [a.attributes["gen_ai.request.model"] for a in sorted(attempts, key=lambda a: a.start_time)] == [
        "flaky", "flaky", "good"]
    assert all(parent_of(a, spans) is chat for a in attempts)
    failed = [a for a in attempts if a.attributes["gen_ai.request.model"] == "flaky"]
    assert all(a.status.status_code is StatusCode.ERROR and a.attributes["atrium.outcome"] == "model_unavailable"
               for a in failed)
    assert chat.status.status_code is StatusCode.OK and chat.attributes["gen_ai.response.model"] == "good"


async def test_an_ingestion_job_has_its_span_with_its_statements_beneath(
        tmp_path: Path, upstream: FaultUpstream) -> None:
    exporter = InMemorySpanExporter()
    settings = await asyncio.to_thread(traced_settings, tmp_path, upstream)
    async with serve(create_app(settings, span_exporter=exporter)) as (_server, http):
        queued = await upload(http, {"notes.md": "# Tracing\n\nSpans follow the job from queue to index."})
        done = await wait_job(http, queued["job_id"])
        assert done["status"] == "succeeded"
        spans = await finished(exporter, "job.ingest")
    [job] = by_name(spans, "job.ingest")
    assert job.parent is None  # a job is its own trace, whatever queued it
    assert job.attributes["atrium.job.id"] == queued["job_id"]
    assert job.attributes["atrium.job.outcome"] == "succeeded" and job.status.status_code is StatusCode.OK
    beneath = [s for s in spans if s.context.trace_id == job.context.trace_id and s is not job]
    statements = [s for s in beneath if s.attributes.get("db.system") == "sqlite"]
    assert any(s.attributes["db.statement"].startswith("INSERT INTO chunks") for s in statements), \
        [s.attributes.get("db.statement", "")[:40] for s in statements]
    # a statement outside any trace (the worker's poll, the index upkeep) makes no trace of its own
    assert all(s.parent is not None for s in spans if "db.system" in (s.attributes or {}))


async def test_tracing_is_off_by_default_and_then_nothing_is_instrumented(tmp_path: Path,
                                                                          upstream: FaultUpstream) -> None:
    settings = await asyncio.to_thread(make_settings, tmp_path / "data", gateway=gateway_config(upstream))
    assert settings.telemetry.tracing.enabled is False
    app = create_app(settings)
    async with serve(app) as (server, http):
        services = server.services
        assert services.http_client.direct  # the gateway's direct aiohttp path
        assert not getattr(services.http_client, "_is_instrumented_by_opentelemetry", False)
        assert not getattr(app, "_is_instrumented_by_opentelemetry", False)
        assert services.telemetry.otel_tracer is None
        answer = await http.post("/v1/chat/completions", json={
            "model": "good", "messages": [{"role": "user", "content": "Hello"}]})
        assert answer.status_code == 200
    [sent] = [r for r in upstream.requests if r.path.endswith("/chat/completions")]
    assert "traceparent" not in sent.headers


def exported_spans(receiver: Receiver) -> tuple[list[ExportTraceServiceRequest], list[Any]]:
    requests = []
    for received in receiver.to("/v1/traces"):
        request = ExportTraceServiceRequest()
        request.ParseFromString(received.body)
        requests.append(request)
    return requests, [span for request in requests for resource in request.resource_spans
                      for scope in resource.scope_spans for span in scope.spans]


async def test_the_otlp_exporter_sends_redacted_spans_to_the_configured_endpoint(
        tmp_path: Path, upstream: FaultUpstream) -> None:
    async with Receiver() as receiver:
        settings = await asyncio.to_thread(
            traced_settings, tmp_path, upstream, service_name="atrium-test", otlp_endpoint=f"{receiver.url}/v1/traces",
            otlp_headers={"authorization": "Bearer collector-token-55"})
        async with serve(create_app(settings)) as (_server, http):
            answer = await http.post(f"/v1/chat/completions?api_key={SECRET_IN_QUERY}", json={
                "model": "good", "messages": [{"role": "user", "content": "Hello"}]})
            assert answer.status_code == 200
        # the app's shutdown flushed the batch to the receiver
    requests, spans = exported_spans(receiver)
    names = {span.name for span in spans}
    assert {"POST /v1/chat/completions", "gateway.chat", "gateway.provider"} <= names
    [resource] = {attr.value.string_value for request in requests for rs in request.resource_spans
                  for attr in rs.resource.attributes if attr.key == "service.name"}
    assert resource == "atrium-test"
    assert receiver.requests[0].headers["authorization"] == "Bearer collector-token-55"
    raw = b"".join(received.body for received in receiver.requests)
    assert b"/v1/chat/completions" in raw and SECRET_IN_QUERY.encode() not in raw


async def test_a_grounded_answer_traces_its_graph_run_and_every_node(tmp_path: Path, upstream: FaultUpstream) -> None:
    exporter = InMemorySpanExporter()
    settings = await asyncio.to_thread(traced_settings, tmp_path, upstream)
    async with serve(create_app(settings, span_exporter=exporter)) as (_server, http):
        await wait_job(http, (await upload(http, {"tides.md": "# Tides\n\nTides follow the moon."}))["job_id"])
        asked = await http.post("/api/v1/chat/ask", json={"message": "What do tides follow?", "collection": "docs"})
        assert asked.status_code == 200, asked.text
    spans = list(exporter.get_finished_spans())
    [server_span] = [s for s in spans if s.name == "POST /api/v1/chat/ask"]
    [run] = by_name(spans, "graph.assistant")
    assert parent_of(run, spans) is server_span
    nodes = sorted((s for s in spans if s.name.startswith("assistant.")), key=lambda s: s.start_time)
    assert [s.name for s in nodes][:3] == ["assistant.retrieve", "assistant.classify", "assistant.answer"]
    assert all(parent_of(node, spans) is run for node in nodes)
    assert all(node.status.status_code is StatusCode.OK for node in nodes)
    # each model call is a child of the node that made it
    calls = by_name(spans, "gateway.chat")
    assert calls and all(parent_of(call, spans) in nodes for call in calls)


async def test_background_work_a_request_set_going_stays_out_of_its_trace(
        tmp_path: Path, upstream: FaultUpstream) -> None:
    """The usage recorder's task is started by the first metered call but outlives it: its batched writes
    belong to no request, and make no span (SQL outside a trace makes none)."""
    exporter = InMemorySpanExporter()
    settings = await asyncio.to_thread(traced_settings, tmp_path, upstream)
    async with serve(create_app(settings, span_exporter=exporter)) as (server, http):
        for number in range(2):
            answer = await http.post("/v1/chat/completions", json={
                "model": "good", "messages": [{"role": "user", "content": f"Hello {number}"}]})
            assert answer.status_code == 200
        for _ in range(100):  # the recorder writes its batch within a second
            async with server.services.db.system_session() as session:
                if await session.scalar(select(func.count()).select_from(UsageRecord)) == 2:
                    break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the usage rows were not written")
    statements = [s.attributes.get("db.statement", "") for s in exporter.get_finished_spans()]
    assert not [s for s in statements if s.startswith(f"INSERT INTO {UsageRecord.__tablename__} ")]
