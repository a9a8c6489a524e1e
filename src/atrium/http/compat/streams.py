"""What the vendor-compatible endpoints share: the call context, opening a gateway stream far enough to
know how it went, collecting a whole answer, and turning a failed stream into one of our errors.

An endpoint opens the stream *before* it answers: :func:`open_stream` pulls events until the first output
(a token, a tool call or the end), so a failure before any output becomes a proper HTTP error status, and
the response headers can name the model and provider that serve. Whoever opens a stream must close it
(:meth:`OpenedStream.aclose`, also when the client goes away): closing it closes the upstream request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, TypeVar

import anyio
from pydantic import Field
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from atrium.accounts.principal import Principal
from atrium.errors import AppError, GatewayError, InvalidRequest, error_for
from atrium.gateway.catalogue import Catalogue
from atrium.gateway.ports import (
    CallContext,
    ChatEvent,
    ChatModel,
    ChatRequest,
    Done,
    ErrorEvent,
    Start,
    Token,
    ToolCall,
    ToolCallDelta,
    Usage,
    with_route,
)
from atrium.gateway.streams import open_events
from atrium.gateway.tokens import TokenCounter

# Bounds shared by both vendor formats (the body limit caps the whole request; these cap single fields).
StopString = Annotated[str, Field(min_length=1, max_length=1000)]
MAX_TOOL_DESCRIPTION = 10_000

if TYPE_CHECKING:
    from atrium.gateway.service import Gateway

T = TypeVar("T")

CLIENT_CLOSED_REQUEST = 499  # what is logged when the client hung up before the answer (nginx's code)


def error_from_event(event: ErrorEvent) -> AppError:
    """The typed error (and so the HTTP status) for a stream that ended with ``event``."""
    return error_for(event.code, event.message, retryable=event.retryable, retry_after=event.retry_after)


def cache_allowed(request: Request, body_cache: bool | None) -> bool:
    """False when the caller opted out: ``Cache-Control: no-cache|no-store``, ``x-atrium-cache: bypass``,
    or ``"cache": false`` in the body."""
    if body_cache is False:
        return False
    directives = {d.strip().lower() for d in request.headers.get("cache-control", "").split(",")}
    if directives & {"no-cache", "no-store"}:
        return False
    return request.headers.get("x-atrium-cache", "").strip().lower() != "bypass"


def call_context(principal: Principal, request: Request, endpoint: str, *, cache: bool | None = None) -> CallContext:
    return CallContext(org_id=principal.org_id, user_id=principal.user_id, api_key_id=principal.api_key_id,
                       endpoint=endpoint, task="chat", cache=cache_allowed(request, cache))


def text_of_parts(parts: object) -> str | None:
    """The text of a list of ``{"type": "text", "text": ...}`` parts, or ``None`` if any part is not text."""
    if not isinstance(parts, list):
        return None
    texts = []
    for part in parts:
        if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            return None
        texts.append(part["text"])
    return "\n".join(texts)


def served_by(model: str, provider: str) -> dict[str, str]:
    """The response headers naming who served an answer."""
    return {"x-atrium-model": model, "x-atrium-provider": provider}


class OpenedStream:
    """A gateway stream that has produced its first output. ``events()`` replays what was read while
    opening, then the rest; ``model``/``provider`` name who serves.

    The final ``Done``/``ErrorEvent`` is passed on as soon as it arrives; what the stack's wrappers do
    after it (the usage record, the budget settlement, the rate-limit tokens, the cache storing the
    answer) runs in ``aclose()``, which reads the stack's stream to its end. Callers close the stream
    once the client has the answer, so that bookkeeping is off the answer's latency, and must always
    close it."""

    def __init__(self, head: list[ChatEvent], rest: AsyncGenerator[ChatEvent, None], model: str,
                 provider: str) -> None:
        self._head = head
        self._rest = rest
        self._handed_out: list[AsyncGenerator[ChatEvent, None]] = []
        self._final_seen = False
        self.model = model
        self.provider = provider

    @property
    def headers(self) -> dict[str, str]:
        return served_by(self.model, self.provider)

    def events(self) -> AsyncGenerator[ChatEvent, None]:
        """Every event up to and including the final one. ``aclose()`` closes it too."""
        events = self._events()
        self._handed_out.append(events)
        return events

    async def _events(self) -> AsyncGenerator[ChatEvent, None]:
        head, self._head = self._head, []
        for event in head:
            if isinstance(event, Done | ErrorEvent):
                self._final_seen = True
            yield event
        if self._final_seen:
            return
        async for event in self._rest:
            if isinstance(event, Done | ErrorEvent):
                self._final_seen = True
                yield event
                return
            yield event

    async def aclose(self) -> None:
        """Finish the stack's stream (to its end when the final event was read, so the wrappers' work after
        it is done; else closed where it is, which closes the upstream request). Safe to call more than
        once, and from a cancelled task."""
        with anyio.CancelScope(shield=True):
            # Readers stop at the final event and leave ``events()`` suspended; closed here rather than by
            # the garbage collector, which would cost a self-pipe write and a task on the event loop.
            for events in self._handed_out:
                await events.aclose()
            if self._final_seen:
                self._final_seen = False
                async for _ in self._rest:
                    pass  # nothing follows a final event; the wrappers finish their work
            await self._rest.aclose()


async def open_stream(chat: ChatModel, request: ChatRequest, *, default_model: str) -> OpenedStream:
    """Start ``request`` and read up to its first output. Raises the typed error if the stream fails
    before any output. ``default_model`` names the model if the stack sent no ``Start``."""
    events = chat.stream(request)
    if not isinstance(events, AsyncGenerator):  # the port promises an async iterator; make it closable
        events = _generator(events)
    opening = await open_events(events, default_model)
    if opening.error is not None:
        raise (GatewayError("The model ended its stream without an answer.") if opening.cut
               else error_from_event(opening.error))
    head = opening.head
    model, provider = default_model, ""
    for event in head:
        if isinstance(event, Start | Done):
            model, provider = event.model or model, event.provider or provider
    return OpenedStream(head, events, model, provider)


async def _generator(events: AsyncIterator[ChatEvent]) -> AsyncGenerator[ChatEvent, None]:
    async for event in events:
        yield event


# How long a call runs before its client's connection is watched: most whole answers from a fast model
# finish sooner, and a watcher is a task of its own (its cost shows on every such request).
WATCH_DISCONNECT_AFTER_S = 0.2


async def unless_disconnected(receive: Receive, work: Awaitable[T]) -> T | None:
    """``await work``, unless the client hangs up first (``receive`` is the request's ASGI receive, its
    body read already): then ``work`` is cancelled (which closes the gateway stream it reads, and so the
    upstream request) and the result is ``None``. For the waits before a response starts, and by
    :class:`EventStreamResponse` while it streams. The connection is watched from
    ``WATCH_DISCONNECT_AFTER_S`` into the call."""
    task = asyncio.current_task()
    assert task is not None
    gone = False
    watcher: asyncio.Task[None] | None = None

    async def watch() -> None:
        nonlocal gone
        try:
            while (await receive())["type"] != "http.disconnect":
                pass  # the body was read already: the next message is the disconnect
        except Exception:  # a server that cannot tell: then nothing is watched
            return
        gone = True
        task.cancel()

    def start_watching() -> None:
        nonlocal watcher
        watcher = asyncio.create_task(watch(), name="disconnect-watch")

    timer = asyncio.get_running_loop().call_later(WATCH_DISCONNECT_AFTER_S, start_watching)
    try:
        return await work
    except asyncio.CancelledError:
        if not gone:
            raise
        task.uncancel()
        return None
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()


def check_kind(catalogue: Catalogue, name: str, kind: str) -> None:
    """A clear 400 when a caller names, say, an embedding model for a chat completion."""
    entry = catalogue.entry(name)
    if entry is not None and entry.kind != kind:
        raise InvalidRequest(f"Model {name!r} is an {entry.kind} model; this endpoint needs a {kind} model."
                             if entry.kind == "embedding" else
                             f"Model {name!r} is a {entry.kind} model; this endpoint needs an {kind} model.",
                             code="model_not_supported")


async def start_chat(gateway: Gateway, request: ChatRequest) -> OpenedStream:
    """Resolve the model now (unknown: 404, not allowed: 403, before any stream is opened), then open the
    stream, the request carrying its route, up to its first output."""
    check_kind(gateway.catalogue, request.model, "chat")
    route = gateway.check(request)
    return await open_stream(gateway.chat, with_route(request, route), default_model=route.entries[0].name)


class ToolCallBuffer:
    """Joins ``ToolCallDelta`` pieces into whole calls, in index order."""

    def __init__(self) -> None:
        self._calls: dict[int, list[str]] = {}

    def add(self, delta: ToolCallDelta) -> None:
        call = self._calls.setdefault(delta.index, ["", "", ""])
        if delta.id:
            call[0] = delta.id
        if delta.name:
            call[1] += delta.name
        call[2] += delta.arguments

    def calls(self) -> list[ToolCall]:
        return [ToolCall(id=call_id or f"call_{index}", name=name, arguments=arguments)
                for index, (call_id, name, arguments) in sorted(self._calls.items())]

    def __bool__(self) -> bool:
        return bool(self._calls)


@dataclass
class Answer:
    """A whole answer, collected from a stream."""

    model: str
    provider: str
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str = "stop"
    stop_sequence: str | None = None
    usage: Usage | None = None
    cached: bool = False


async def collect(stream: OpenedStream) -> Answer:
    """Read the stream up to its final event; raises the typed error if it fails, even after some output (a
    partial answer is never passed off as a whole one). The caller closes the stream
    (:func:`respond_with_answer`: once the answer is sent, or at once when anything failed)."""
    parts: list[str] = []
    calls = ToolCallBuffer()
    answer = Answer(model=stream.model, provider=stream.provider)
    async for event in stream.events():
        match event:
            case Token(text=text):
                parts.append(text)
            case ToolCallDelta():
                calls.add(event)
            case Usage():
                answer.usage = event
            case ErrorEvent():
                raise error_from_event(event)
            case Done():
                answer.model = event.model or answer.model
                answer.provider = event.provider or answer.provider
                answer.finish_reason, answer.cached = event.finish_reason, event.cached
                answer.stop_sequence = event.stop_sequence
                break
        # Start: the model is already known
    else:
        raise GatewayError("The model ended its stream without a final event.", code="upstream_error")
    answer.text, answer.tool_calls = "".join(parts), calls.calls()
    return answer


def usage_or_estimate(usage: Usage | None, request: ChatRequest, output: str, counter: TokenCounter) -> Usage:
    """The provider's usage, else an offline count (the stack only meters it, it does not emit one)."""
    if usage is not None:
        return usage
    return Usage(prompt_tokens=counter.count_messages(request.messages), completion_tokens=counter.count(output))


def dumps(payload: object) -> str:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


class AnswerResponse(JSONResponse):
    """A whole answer's JSON; the gateway stream is closed once the body is sent (or the sending failed),
    so the stack's bookkeeping after the answer is not part of its latency."""

    def __init__(self, content: object, stream: OpenedStream, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(content, headers=dict(headers or {}))
        self._stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._stream.aclose()


async def respond_with_answer(stream: OpenedStream, render: Callable[[Answer, Usage], object],
                              estimate: Callable[[str], Usage]) -> AnswerResponse:
    """``render(answer, usage)`` as an :class:`AnswerResponse`; the usage is the provider's, else
    ``estimate`` of the answer's text and tool calls. The stream is closed whatever fails before the
    response exists."""
    try:
        answer = await collect(stream)
        usage = answer.usage or estimate(answer.text + "".join(c.name + c.arguments for c in answer.tool_calls))
        return AnswerResponse(render(answer, usage), stream, headers=served_by(answer.model, answer.provider))
    except BaseException:
        await stream.aclose()
        raise


class EventStreamResponse(StreamingResponse):
    """``text/event-stream`` over ``body``; however the response ends (finished, client gone, server
    shutting down) the gateway stream is closed, which closes the upstream request."""

    def __init__(self, body: AsyncGenerator[str, None], stream: OpenedStream,
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__(body, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})})
        self._body = body
        self._stream = stream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Starlette streams from a task of its own (a loop turn before the first byte, more so on a busy
        # loop) while this task listens for the disconnect; here the first bytes go out from this task
        # and the disconnect is watched beside it, as for a whole answer.
        await unless_disconnected(receive, self.stream_response(send))

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await self._body.aclose()
            await self._stream.aclose()
