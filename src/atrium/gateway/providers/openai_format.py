"""The OpenAI chat-completions wire format (streaming), over an injected ``httpx.AsyncClient``.

One adapter for every upstream that speaks this format: OpenAI, Azure OpenAI, Groq, TGI, vLLM, Ollama, and
Atrium's own managed llama.cpp server. *Who* to call (URL layout, auth header, query) is a
:class:`~atrium.gateway.providers.base.Provider`; nothing here depends on the vendor.

Request: messages (text or content parts, assistant ``tool_calls``, ``tool`` results), ``tools``,
``tool_choice`` (sent only with tools), ``response_format``, ``stop``; ``max_tokens``/``temperature`` are
left out when ``None``; ``extra`` is passed through verbatim under the typed fields.

Stream rules (the port's contract, made concrete):

* Server-sent events (:mod:`~atrium.gateway.providers.sse`); ``data: [DONE]`` ends the stream.
* Content deltas become ``Token``; ``delta.tool_calls[i]`` pieces become ``ToolCallDelta`` (the first piece
  of a call carries its id and name, later ones append to its arguments). A non-streamed answer (an upstream
  that ignored ``stream: true``) is accepted too: its ``message.tool_calls`` arrive as one delta per call.
* The stream ends with ``Done`` only when the upstream said the generation finished: a ``finish_reason``
  (``stop``, ``length``, ``tool_calls``, ...) was received and the stream then reached ``[DONE]`` or closed
  cleanly. A ``[DONE]`` without any ``finish_reason`` (e.g. llama.cpp's server interrupting a request) or a
  body that stops early is an ``ErrorEvent``; so is a chunk that is not JSON or not shaped like a chunk.
* ``stream_options.include_usage`` is requested. When the upstream sends no usage, ``Usage`` is still
  emitted: completion tokens are the number of non-empty deltas (servers send about one token per delta, so
  this is close but not exact), prompt tokens come from the injected ``prompt_token_counter`` when there is
  one, else from :func:`~atrium.gateway.providers.base.approximate_prompt_tokens` (an estimate, good for
  metering trends, not for billing).
* HTTP and transport failures become ``ErrorEvent`` with the codes of :mod:`atrium.errors`, ``retry_after``
  from ``retry-after-ms``/``Retry-After``, and the adapter's and provider's names; messages name the
  provider, never its URL or credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from atrium.errors import AppError, GatewayError, ModelUnavailable
from atrium.gateway.ports import (
    ChatEvent,
    ChatMessage,
    ChatRequest,
    Done,
    Token,
    ToolCallDelta,
    Usage,
)
from atrium.gateway.providers import base as adapter_base
from atrium.gateway.providers.base import RemoteChatAdapter, approximate_prompt_tokens, upstream_error

__all__ = ["OpenAIChatModel", "PromptTokenCounter", "approximate_prompt_tokens", "openai_error"]

PromptTokenCounter = Callable[[ChatRequest], Awaitable[int]]
Piece = Token | ToolCallDelta

_RESERVED_BODY_KEYS = frozenset({"model", "messages", "stream", "stream_options"})
_COUNTER_WAIT_SECONDS = 5.0


class OpenAIChatModel(RemoteChatAdapter):
    """ChatModel adapter for the OpenAI chat-completions streaming format.

    ``client`` is owned by the caller (built once, shared); ``aclose`` does not close it. ``timeout``
    overrides the client's timeout per request (its ``read`` part bounds the gap between two chunks).
    ``prompt_token_counter`` gives exact prompt counts for upstreams that do not stream usage; it is
    started alongside the request so its latency overlaps the generation.
    """

    def __init__(
        self,
        provider: adapter_base.Provider,
        client: httpx.AsyncClient,
        *,
        name: str | None = None,
        timeout: httpx.Timeout | None = None,
        prompt_token_counter: PromptTokenCounter | None = None,
    ) -> None:
        self.name = name or provider.model
        self._provider = provider
        self._client = client
        self._timeout = timeout
        self._prompt_token_counter = prompt_token_counter
        self._closed = False
        self._chat_url = provider.url("chat/completions")
        self._headers = provider.request_headers()

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ChatEvent, None]:
        """Stream tokens and tool-call pieces, then ``Usage``, then one ``Done``; or end with one
        ``ErrorEvent``."""
        provider = self._provider
        if self._closed:
            closed = ModelUnavailable(f"Model {self.name!r} is closed.")
            yield adapter_base.error_event(closed, model=self.name, provider=provider.name)
            return
        counter = self._start_prompt_count(request)
        state = _StreamState()
        completed = False
        try:
            async with contextlib.aclosing(self._pieces(request, state)) as pieces:
                async for piece in pieces:
                    yield piece
            completed = True
        except AppError as exc:
            yield adapter_base.error_event(exc, model=self.name, provider=provider.name)
            return
        finally:
            if counter is not None and (not completed or state.usage is not None):
                counter.cancel()
        usage = state.usage or Usage(
            prompt_tokens=await _prompt_tokens(request, counter), completion_tokens=state.deltas
        )
        yield usage
        yield Done(model=self.name, finish_reason=state.finish_reason or "stop", provider=provider.name)

    def _start_prompt_count(self, request: ChatRequest) -> asyncio.Task[int] | None:
        if self._prompt_token_counter is None:
            return None
        return asyncio.ensure_future(self._prompt_token_counter(request))

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {k: v for k, v in request.extra.items() if k not in _RESERVED_BODY_KEYS}
        body.update(model=self._provider.model, messages=[_message(m) for m in request.messages],
                    stream=request.stream)
        if request.stream:
            body["stream_options"] = {"include_usage": True}
        optional: dict[str, Any] = {
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stop": list(request.stop) or None,
            "tools": adapter_base.plain_json(request.tools) or None,
            "tool_choice": adapter_base.plain_json(request.tool_choice) if request.tools else None,
            "response_format": adapter_base.plain_json(request.response_format),
        }
        body.update({key: value for key, value in optional.items() if value is not None})
        return body

    async def _pieces(self, request: ChatRequest, state: _StreamState) -> AsyncGenerator[Piece, None]:
        """Yield content and tool-call deltas; record finish reason and usage in ``state``; raise
        ``GatewayError``."""
        provider = self._provider
        async with adapter_base.open_stream(self._client, provider, self._chat_url, body=self._body(request),
                               headers=self._headers, timeout=self._timeout, error=openai_error) as answer:
            if answer.whole is not None:  # one piece
                for piece in _parse_completion(provider, answer.whole, state):
                    yield piece
                return
            async for event in answer.events:
                if state.done_marker:
                    continue  # read the body to its end, so the connection goes back to the pool
                if event.data == "[DONE]":
                    state.done_marker = True
                    continue
                for piece in _parse_chunk(provider, event.data, state):
                    state.deltas += 1
                    yield piece
        if state.finish_reason is None:
            how = "sent [DONE] without a finish reason" if state.done_marker else "ended the stream early"
            raise GatewayError(f"{provider.name} {how}; the answer is incomplete.", retryable=True)


@dataclass(slots=True)
class _StreamState:
    deltas: int = 0
    finish_reason: str | None = None
    usage: Usage | None = None
    done_marker: bool = False


def _message(message: ChatMessage) -> dict[str, Any]:
    content = message.content if isinstance(message.content, str) else adapter_base.plain_json(message.content)
    out: dict[str, Any] = {"role": message.role, "content": content}
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in message.tool_calls
        ]
        if content == "":
            out["content"] = None  # OpenAI's shape for "only tool calls"
    if message.tool_call_id is not None:
        out["tool_call_id"] = message.tool_call_id
    if message.name:
        out["name"] = message.name
    return out


async def _prompt_tokens(request: ChatRequest, counter: asyncio.Task[int] | None) -> int:
    if counter is not None:
        try:
            return await asyncio.wait_for(counter, _COUNTER_WAIT_SECONDS)
        except Exception:  # the counter is best effort: any failure falls back to the estimate
            pass
    return approximate_prompt_tokens(request)


def _parse_chunk(provider: adapter_base.Provider, data: str, state: _StreamState) -> list[Piece]:
    chunk = _json_object(provider, data, "stream chunk")
    if "error" in chunk:
        raise openai_error(provider, chunk, status=None)
    return _pieces_of(provider, chunk, "delta", state)


def _parse_completion(provider: adapter_base.Provider, raw: bytes, state: _StreamState) -> list[Piece]:
    pieces = _pieces_of(provider, _json_object(provider, raw, "response"), "message", state)
    state.deltas += len(pieces)
    return pieces


def _json_object(provider: adapter_base.Provider, raw: str | bytes, what: str) -> dict[str, Any]:
    try:
        payload = json.loads(raw)
    except ValueError:
        raise GatewayError(f"{provider.name} sent a malformed {what}.", retryable=True) from None
    if not isinstance(payload, dict):
        raise GatewayError(f"{provider.name} sent a malformed {what}.", retryable=True)
    return payload


def _pieces_of(provider: adapter_base.Provider, payload: dict[str, Any], key: str, state: _StreamState) -> list[Piece]:
    """The content and tool calls of the first choice's ``key`` ("delta" in a chunk, "message" in a
    completion); records the finish reason and usage on ``state``."""
    pieces: list[Piece] = []
    for choice in _choices(provider, payload):
        part = choice.get(key) or {}
        if not isinstance(part, dict):
            raise GatewayError(f"{provider.name} sent a malformed stream chunk.", retryable=True)
        content = part.get("content")
        if isinstance(content, str) and content:
            pieces.append(Token(content))
        pieces.extend(_tool_call_deltas(provider, part.get("tool_calls")))
        if isinstance(choice.get("finish_reason"), str):
            state.finish_reason = choice["finish_reason"]
    _record_usage(payload, state)
    return pieces


def _tool_call_deltas(provider: adapter_base.Provider, calls: object) -> list[ToolCallDelta]:
    if calls is None:
        return []
    if not isinstance(calls, list) or not all(isinstance(call, dict) for call in calls):
        raise GatewayError(f"{provider.name} sent malformed tool calls.", retryable=True)
    deltas: list[ToolCallDelta] = []
    for position, call in enumerate(calls):
        function = call.get("function") or {}
        index = call.get("index", position)
        arguments = function.get("arguments") if isinstance(function, dict) else None
        if isinstance(arguments, dict):  # some servers send the object rather than its JSON text
            arguments = json.dumps(arguments)
        delta = ToolCallDelta(
            index=index if isinstance(index, int) else position,
            id=call["id"] if isinstance(call.get("id"), str) and call["id"] else None,
            name=function.get("name") if isinstance(function, dict) and function.get("name") else None,
            arguments=arguments if isinstance(arguments, str) else "",
        )
        if delta.id or delta.name or delta.arguments:
            deltas.append(delta)
    return deltas


def _choices(provider: adapter_base.Provider, payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The first choice (index 0) of a chunk or completion; ``[]`` for usage-only chunks."""
    choices = payload.get("choices") or []
    if not isinstance(choices, list) or not all(isinstance(c, dict) for c in choices):
        raise GatewayError(f"{provider.name} sent a malformed stream chunk.", retryable=True)
    return [c for c in choices if c.get("index", 0) == 0]


def _record_usage(payload: dict[str, Any], state: _StreamState) -> None:
    usage = payload.get("usage")
    if isinstance(usage, dict):
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        if isinstance(prompt, int) and isinstance(completion, int):
            state.usage = Usage(prompt_tokens=prompt, completion_tokens=completion)


def openai_error(
    provider: adapter_base.Provider, payload: dict[str, Any], *, status: int | None, retry_after: float | None = None
) -> GatewayError:
    """Map an HTTP status and/or an OpenAI-style ``{"error": {...}}`` body to one of our errors."""
    error = payload.get("error")
    detail = error.get("message") if isinstance(error, dict) else error if isinstance(error, str) else None
    kind = " ".join(str(error.get(k) or "") for k in ("type", "code")) if isinstance(error, dict) else ""
    return upstream_error(
        provider, status=status, kind=kind, detail=detail or payload.get("detail") or payload.get("message"),
        retry_after=retry_after,
    )  # fmt: skip
