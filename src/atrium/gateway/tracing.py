"""Spans for gateway calls: a wrapper implementing the ChatModel port, added by ``build_gateway`` only when
tracing is on (off, the stack has no such layer and costs nothing more).

Two places in the stack wear it: around the whole stack (``gateway.chat``: guard, budgets, metering, cache,
routing and fallback, every attempt) and around each model's adapter, beneath its retries and breaker
(``gateway.provider``: one span per attempt), so the HTTP client's span for the upstream request is the
attempt's child. The span is current only while the inner stream works (each step of it), never while the
consumer holds an event: a span the consumer opens between two events is not made the call's child.

Attributes follow OpenTelemetry's GenAI conventions where they fit: ``gen_ai.request.model``,
``gen_ai.response.model``, ``gen_ai.usage.input_tokens``/``output_tokens``, ``gen_ai.response.finish_reasons``;
and ``atrium.provider``, ``atrium.outcome`` (``ok``, ``cache_hit`` or the error code), ``atrium.endpoint``.
The time of the first token is an event (``first_token``). Never a prompt, an answer or a tenant id.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from atrium.gateway.ports import ChatEvent, ChatModel, ChatRequest, Done, ErrorEvent, Start, Token, ToolCallDelta, Usage
from atrium.gateway.wrapping import ChatModelWrapper


class TracedChatModel(ChatModelWrapper):
    """Wrapper: each call is the span ``span_name`` (``gateway.chat`` or ``gateway.provider``)."""

    def __init__(self, inner: ChatModel, tracer: trace.Tracer, span_name: str, *, provider: str | None = None,
                 kind: SpanKind = SpanKind.INTERNAL) -> None:
        super().__init__(inner)
        self._tracer = tracer
        self._span_name = span_name
        self._provider = provider
        self._kind = kind

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ChatEvent, None]:
        attributes: dict[str, str | bool] = {"gen_ai.operation.name": "chat", "atrium.streamed": request.stream}
        if self._provider is not None:  # an attempt: the catalogue model it asks (the request may name a route)
            attributes["gen_ai.request.model"] = self.name
            attributes["atrium.provider"] = self._provider
        elif request.model:
            attributes["gen_ai.request.model"] = request.model
        if request.context.endpoint:
            attributes["atrium.endpoint"] = request.context.endpoint
        span = self._tracer.start_span(self._span_name, kind=self._kind, attributes=attributes)
        within = trace.set_span_in_context(span)
        events: AsyncIterator[ChatEvent] = self._inner.stream(request)
        first, final = True, False
        try:
            while True:
                token = otel_context.attach(within)
                try:
                    event = await anext(events)
                except StopAsyncIteration:
                    break
                finally:
                    otel_context.detach(token)
                if first and isinstance(event, Token | ToolCallDelta):
                    first = False
                    span.add_event("first_token")
                final = _note(span, event) or final
                yield event
        except (GeneratorExit, asyncio.CancelledError):
            if not final:  # the consumer left before the end (a client went away)
                span.set_attribute("atrium.outcome", "cancelled")
            raise
        except BaseException as exc:
            if not final:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            closing = otel_context.attach(within)
            try:
                aclose = getattr(events, "aclose", None)
                if aclose is not None:
                    await aclose()
            finally:
                otel_context.detach(closing)
                span.end()


def _note(span: trace.Span, event: ChatEvent) -> bool:
    """Record what ``event`` tells of the call; True for the final event."""
    match event:
        case Start(model=model, provider=provider):
            span.set_attribute("gen_ai.response.model", model)
            if provider:
                span.set_attribute("atrium.provider", provider)
        case Usage(prompt_tokens=prompt, completion_tokens=completion):
            span.set_attribute("gen_ai.usage.input_tokens", prompt)
            span.set_attribute("gen_ai.usage.output_tokens", completion)
        case Done(model=model, finish_reason=reason, cached=cached):
            span.set_attribute("gen_ai.response.model", model)
            span.set_attribute("gen_ai.response.finish_reasons", (reason,))
            span.set_attribute("atrium.outcome", "cache_hit" if cached else "ok")
            span.set_status(Status(StatusCode.OK))
            return True
        case ErrorEvent(code=code, retryable=retryable):
            span.set_attribute("atrium.outcome", code)
            span.set_attribute("atrium.retryable", retryable)
            span.set_status(Status(StatusCode.ERROR, code))
            return True
    return False
