"""``TracedChatModel``: a call is one span, current while the model works and never while the consumer holds
an event, ended however the consumer leaves; and the spans leave redacted."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from atrium.gateway.ports import ChatEvent, ChatMessage, ChatRequest, Token
from atrium.gateway.providers.fake import FakeChatModel
from atrium.gateway.tracing import TracedChatModel
from atrium.telemetry.otel import RedactingSpanExporter

REQUEST = ChatRequest(messages=(ChatMessage("user", "Hi"),), model="fake")


def traced(inner: FakeChatModel) -> tuple[TracedChatModel, InMemorySpanExporter, list[str]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(RedactingSpanExporter(exporter)))
    seen_inside: list[str] = []

    class Watching(FakeChatModel):  # what the model sees as the current span while it works
        async def stream(self, request: ChatRequest):  # type: ignore[override]
            async for event in inner.stream(request):
                seen_inside.append(trace.get_current_span().get_span_context().span_id.to_bytes(8, "big").hex())
                yield event

    model = TracedChatModel(Watching(), provider.get_tracer("test"), "gateway.chat")
    return model, exporter, seen_inside


async def test_the_span_is_current_inside_the_model_and_not_in_the_consumer() -> None:
    model, exporter, seen_inside = traced(FakeChatModel(answer=lambda _r: "one two three"))
    outside: list[bool] = []
    events: list[ChatEvent] = []
    async for event in model.stream(REQUEST):
        outside.append(trace.get_current_span().get_span_context().is_valid)
        events.append(event)
    [span] = exporter.get_finished_spans()
    assert set(seen_inside) == {format(span.context.span_id, "016x")}
    assert outside == [False] * len(events)
    assert span.status.status_code is StatusCode.OK and span.attributes["atrium.outcome"] == "ok"
    assert span.attributes["gen_ai.usage.output_tokens"] == 3
    assert [event.name for event in span.events] == ["first_token"]


async def test_a_consumer_that_leaves_mid_answer_ends_the_span_as_cancelled() -> None:
    model, exporter, _ = traced(FakeChatModel(answer=lambda _r: "one two three four"))
    stream = model.stream(REQUEST)
    assert isinstance(await anext(stream), Token)
    assert exporter.get_finished_spans() == ()  # still running
    await stream.aclose()
    [span] = exporter.get_finished_spans()
    assert span.attributes["atrium.outcome"] == "cancelled" and span.status.status_code is StatusCode.UNSET


async def test_a_failed_call_is_an_error_span_with_its_code() -> None:
    model, exporter, _ = traced(FakeChatModel(fail_before_first=True, error_code="model_timeout"))
    [event] = [e async for e in model.stream(REQUEST)]
    assert event.type == "error"
    [span] = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR and span.status.description == "model_timeout"


def test_exported_spans_are_redacted() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(RedactingSpanExporter(exporter)))
    tracer = provider.get_tracer("test")
    try:
        with tracer.start_as_current_span("s", attributes={"url.full": "https://x.test/?key=abcdefgh12345678",
                                                           "n": 3}):
            raise RuntimeError("failed with Bearer opaque-credential-123")
    except RuntimeError:
        pass
    [span] = exporter.get_finished_spans()
    assert span.attributes["url.full"] == "https://x.test/?key=[REDACTED]" and span.attributes["n"] == 3
    shown = str(span.status.description) + str([dict(event.attributes or {}) for event in span.events])
    assert "opaque-credential-123" not in shown and "[REDACTED]" in shown
