"""The OpenAI chat-completions wire format (streaming), over an injected ``httpx.AsyncClient``.

One adapter for every upstream that speaks this format: OpenAI, Azure-style gateways, Groq, vLLM, Ollama,
and Atrium's own managed llama.cpp server. *Who* to call is a
:class:`~atrium.gateway.providers.base.Provider`.

Stream rules (the port's contract, made concrete):

* Server-sent events are parsed line by line: ``data:`` lines (joined when an event has several), comment
  lines (``: ping``) and other fields ignored, ``data: [DONE]`` ends the stream.
* The stream ends with ``Done`` only when the upstream said the generation finished: a ``finish_reason``
  was received and the stream then reached ``[DONE]`` or closed cleanly. A ``[DONE]`` without any
  ``finish_reason`` (e.g. llama.cpp's server interrupting a request) or a body that stops early is an
  ``ErrorEvent``; so is a chunk that is not JSON or not shaped like a chat-completion chunk.
* ``stream_options.include_usage`` is requested. When the upstream sends no usage, ``Usage`` is still
  emitted: completion tokens are the number of non-empty content deltas (servers send about one token per
  delta, so this is close but not exact), prompt tokens come from the injected ``prompt_token_counter`` when
  there is one, else from :func:`approximate_prompt_tokens` (about 4 characters per token plus a per-message
  overhead: an estimate, good for metering trends, not for billing).
* HTTP and transport failures become ``ErrorEvent`` with the codes of :mod:`atrium.errors` plus
  ``rate_limited``; messages name the provider, never its URL or credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from atrium.errors import GatewayError, ModelTimeout, ModelUnavailable
from atrium.gateway.ports import ChatEvent, ChatRequest, Done, ErrorEvent, Token, Usage
from atrium.gateway.providers.base import Provider

PromptTokenCounter = Callable[[ChatRequest], Awaitable[int]]

_RESERVED_BODY_KEYS = frozenset({"model", "messages", "stream", "stream_options"})
_MAX_ERROR_BODY = 64 * 1024
_MAX_MESSAGE = 300
_COUNTER_WAIT_SECONDS = 5.0


def approximate_prompt_tokens(request: ChatRequest) -> int:
    """A rough prompt size: ``ceil(chars / 4)`` per message + 4 tokens of per-message framing + 3 for the
    reply primer (the usual rule of thumb for BPE vocabularies on English text)."""
    return 3 + sum(4 + math.ceil(len(message.content) / 4) for message in request.messages)


class OpenAIChatModel:
    """ChatModel adapter for the OpenAI chat-completions streaming format.

    ``client`` is owned by the caller (built once, shared); ``aclose`` does not close it. ``timeout``
    overrides the client's timeout per request (its ``read`` part bounds the gap between two chunks).
    ``prompt_token_counter`` gives exact prompt counts for upstreams that do not stream usage; it is
    started alongside the request so its latency overlaps the generation.
    """

    def __init__(
        self,
        provider: Provider,
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

    async def ready(self) -> bool:
        """True until closed: a remote provider is not probed (``/ready`` must not spend API quota)."""
        return not self._closed

    async def aclose(self) -> None:
        self._closed = True

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ChatEvent, None]:
        """Stream tokens, then ``Usage``, then one ``Done``; or end with one ``ErrorEvent``."""
        if self._closed:
            yield ErrorEvent(code=ModelUnavailable.code, message=f"Model {self.name!r} is closed.")
            return
        counter = self._start_prompt_count(request)
        state = _StreamState()
        completed = False
        try:
            async with contextlib.aclosing(self._tokens(request, state)) as texts:
                async for text in texts:
                    yield Token(text)
            completed = True
        except GatewayError as exc:
            yield ErrorEvent(code=exc.code, message=exc.message, retryable=exc.retryable)
            return
        finally:
            if counter is not None and (not completed or state.usage is not None):
                counter.cancel()
        usage = state.usage or Usage(
            prompt_tokens=await _prompt_tokens(request, counter), completion_tokens=state.deltas
        )
        yield usage
        yield Done(model=self.name, finish_reason=state.finish_reason or "stop")

    def _start_prompt_count(self, request: ChatRequest) -> asyncio.Task[int] | None:
        if self._prompt_token_counter is None:
            return None
        return asyncio.ensure_future(self._prompt_token_counter(request))

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {k: v for k, v in request.extra.items() if k not in _RESERVED_BODY_KEYS}
        body.update(
            model=self._provider.model,
            messages=[{"role": m.role, "content": m.content} for m in request.messages],
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=request.max_tokens,
            temperature=request.temperature,
        )
        if request.stop:
            body["stop"] = list(request.stop)
        return body

    async def _tokens(self, request: ChatRequest, state: _StreamState) -> AsyncGenerator[str, None]:
        """Yield content deltas; record finish reason and usage in ``state``; raise ``GatewayError``."""
        provider = self._provider
        timeout = self._timeout if self._timeout is not None else httpx.USE_CLIENT_DEFAULT
        try:
            async with self._client.stream(
                "POST",
                provider.url("chat/completions"),
                json=self._body(request),
                headers=provider.request_headers(),
                timeout=timeout,
            ) as response:
                if response.status_code >= 400:
                    raise await _http_error(provider, response)
                if response.headers.get("content-type", "").startswith("application/json"):
                    # The upstream ignored ``stream: true`` and answered in one piece.
                    for text in _parse_completion(provider, await response.aread(), state):
                        yield text
                    return
                async with contextlib.aclosing(_sse_data(response.aiter_lines())) as events:
                    async for data in events:
                        if data == "[DONE]":
                            state.done_marker = True
                            break
                        for text in _parse_chunk(provider, data, state):
                            state.deltas += 1
                            yield text
        except httpx.TimeoutException as exc:
            raise ModelTimeout(
                f"{provider.name} did not answer in time ({type(exc).__name__}).", retryable=True
            ) from exc
        except httpx.ConnectError as exc:
            raise ModelUnavailable(f"Cannot connect to {provider.name}.", retryable=True) from exc
        except httpx.HTTPError as exc:  # reset, protocol error, incomplete body
            raise GatewayError(
                f"The connection to {provider.name} broke mid-stream ({type(exc).__name__}).", retryable=True
            ) from exc
        if state.finish_reason is None:
            how = "sent [DONE] without a finish reason" if state.done_marker else "ended the stream early"
            raise GatewayError(f"{provider.name} {how}; the answer is incomplete.", retryable=True)


@dataclass(slots=True)
class _StreamState:
    deltas: int = 0
    finish_reason: str | None = None
    usage: Usage | None = None
    done_marker: bool = False


async def _prompt_tokens(request: ChatRequest, counter: asyncio.Task[int] | None) -> int:
    if counter is not None:
        try:
            return await asyncio.wait_for(counter, _COUNTER_WAIT_SECONDS)
        except Exception:  # the counter is best effort: any failure falls back to the estimate
            pass
    return approximate_prompt_tokens(request)


async def _sse_data(lines: AsyncIterator[str]) -> AsyncGenerator[str, None]:
    """The ``data`` payloads of a server-sent-event stream, one per event."""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:  # an unterminated last event: pass it on, the parser decides
        yield "\n".join(data)


def _parse_chunk(provider: Provider, data: str, state: _StreamState) -> list[str]:
    chunk = _json_object(provider, data, "stream chunk")
    if "error" in chunk:
        raise _error_from_payload(provider, chunk, status=None)
    return _texts(provider, chunk, "delta", state)


def _parse_completion(provider: Provider, raw: bytes, state: _StreamState) -> list[str]:
    texts = _texts(provider, _json_object(provider, raw, "response"), "message", state)
    state.deltas += len(texts)
    return texts


def _json_object(provider: Provider, raw: str | bytes, what: str) -> dict[str, Any]:
    try:
        payload = json.loads(raw)
    except ValueError:
        raise GatewayError(f"{provider.name} sent a malformed {what}.", retryable=True) from None
    if not isinstance(payload, dict):
        raise GatewayError(f"{provider.name} sent a malformed {what}.", retryable=True)
    return payload


def _texts(provider: Provider, payload: dict[str, Any], key: str, state: _StreamState) -> list[str]:
    """The content of the first choice's ``key`` ("delta" in a chunk, "message" in a completion); records
    the finish reason and usage on ``state``."""
    texts: list[str] = []
    for choice in _choices(provider, payload):
        part = choice.get(key) or {}
        content = part.get("content") if isinstance(part, dict) else None
        if isinstance(content, str) and content:
            texts.append(content)
        if isinstance(choice.get("finish_reason"), str):
            state.finish_reason = choice["finish_reason"]
    _record_usage(payload, state)
    return texts


def _choices(provider: Provider, payload: dict[str, Any]) -> list[dict[str, Any]]:
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


async def _http_error(provider: Provider, response: httpx.Response) -> GatewayError:
    status = response.status_code
    raw = b""
    with contextlib.suppress(httpx.HTTPError):
        async for block in response.aiter_bytes():
            raw += block
            if len(raw) >= _MAX_ERROR_BODY:
                break
    try:
        payload = json.loads(raw)
    except ValueError:
        payload = None
    retry_after = response.headers.get("retry-after")
    return _error_from_payload(
        provider, payload if isinstance(payload, dict) else {}, status=status, retry_after=retry_after
    )


def _error_from_payload(
    provider: Provider, payload: dict[str, Any], *, status: int | None, retry_after: str | None = None
) -> GatewayError:
    """Map an HTTP status and/or an OpenAI-style ``{"error": {...}}`` body to one of our errors."""
    error = payload.get("error")
    detail = error.get("message") if isinstance(error, dict) else error if isinstance(error, str) else None
    detail = detail or payload.get("detail")
    kind = " ".join(str(error.get(k, "")) for k in ("type", "code")) if isinstance(error, dict) else ""
    where = f"{provider.name} returned HTTP {status}" if status is not None else f"{provider.name} failed"
    text = where
    if status not in (401, 403) and isinstance(detail, str) and detail:  # auth errors may echo the key
        text = f"{where}: {provider.redact(detail)[:_MAX_MESSAGE]}"
    if "context_length_exceeded" in kind:
        return GatewayError(text, code="context_length_exceeded")
    if status == 429 or "rate_limit" in kind:
        if retry_after:
            text += f" (retry after {retry_after[:20]} s)"
        # An exhausted quota is a 429 too, but waiting a moment will not fix it.
        return GatewayError(text, code="rate_limited", retryable="insufficient_quota" not in kind)
    if status in (408, 504):
        return ModelTimeout(text, retryable=True)
    if status in (503, 529) or "overloaded" in kind:
        return ModelUnavailable(text, retryable=True)
    if status == 404:
        return ModelUnavailable(text)
    if status is None or status >= 500:
        return GatewayError(text, retryable=True)
    return GatewayError(text)
