"""Anthropic's Messages API (streaming), over an injected ``httpx.AsyncClient``.

``POST {base_url}/v1/messages`` (``base_url`` without ``/v1``, e.g. ``https://api.anthropic.com``) with the
key in ``x-api-key`` (unless the provider's ``auth`` says otherwise) and ``anthropic-version`` (the
provider's ``api_version``, else ``2023-06-01``).

Request translation from the port's OpenAI-shaped ``ChatRequest``:

* system messages -> the top-level ``system`` string (joined by blank lines, wherever they stood);
* consecutive messages of one role are merged into one (Anthropic wants user and assistant to alternate);
  in a user turn, ``tool_result`` blocks come first, as Anthropic requires;
* assistant ``tool_calls`` -> ``tool_use`` blocks (``input`` = the parsed arguments); a ``tool`` message ->
  a user turn with a ``tool_result`` block;
* content parts: text -> text blocks, ``image_url`` data URLs -> base64 image blocks, http(s) URLs -> URL
  image blocks; other part types cannot be carried (``invalid_request``);
* OpenAI function tools -> ``{name, description, input_schema}``; ``tool_choice`` ``auto`` -> ``auto``,
  ``required`` -> ``any``, ``{"type": "function", "function": {"name"}}`` -> ``tool``, ``none`` -> no tools
  sent (or ``{"type": "none"}`` when the history holds tool blocks, which Anthropic only accepts with
  tools defined); ``extra["parallel_tool_calls"] = False`` -> ``disable_parallel_tool_use``;
* ``stop`` -> ``stop_sequences``; ``max_tokens`` is required by Anthropic: the request's or
  ``default_max_tokens``; ``temperature`` is capped at 1.0 (Anthropic's range is 0-1);
* ``response_format`` has no Anthropic counterpart and is ignored; of ``extra`` only Anthropic's own
  ``top_p``, ``top_k``, ``metadata``, ``thinking`` and ``service_tier`` are passed on.

Stream: ``message_start`` (input tokens) -> ``content_block_start`` (text, or ``tool_use`` with id and
name) -> ``content_block_delta`` (``text_delta`` -> ``Token``, ``input_json_delta`` -> ``ToolCallDelta``;
tool calls are numbered among themselves, not by content block) -> ``content_block_stop`` ->
``message_delta`` (stop reason, output tokens) -> ``message_stop``. ``ping`` and unknown events are ignored.
``event: error`` ends the stream with the mapped ``ErrorEvent`` (``overloaded_error`` -> retryable
``model_unavailable``, ``rate_limit_error`` -> ``rate_limited``, ...). Only ``message_stop`` completes the
answer: a stream that ends without it, a malformed event or a broken connection is a retryable
``ErrorEvent``, never ``Done``. ``Usage`` is input (plus cache read/creation) and output tokens as reported.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from atrium.errors import AppError, GatewayError, InvalidRequest, ModelUnavailable
from atrium.gateway import ports
from atrium.gateway.ports import ChatMessage, ChatRequest, Usage
from atrium.gateway.providers.base import (
    Provider,
    RemoteChatAdapter,
    approximate_prompt_tokens,
    error_event,
    open_stream,
    plain_json,
    upstream_error,
)
from atrium.gateway.providers.sse import ServerSentEvent

DEFAULT_BASE_URL = "https://api.anthropic.com"
DEFAULT_VERSION = "2023-06-01"

Piece = ports.Token | ports.ToolCallDelta

_PASSTHROUGH = frozenset({"top_p", "top_k", "metadata", "thinking", "service_tier"})
_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_DATA_URL = re.compile(r"^data:(?P<media_type>[\w.+-]+/[\w.+-]+);base64,(?P<data>.+)$", re.DOTALL)
_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


class AnthropicChatModel(RemoteChatAdapter):
    """ChatModel adapter for Anthropic's Messages API (see the module docstring for the translation).

    ``client`` is owned by the caller; ``timeout`` overrides its timeout per request (``read`` bounds the
    gap between two events); ``default_max_tokens`` is sent when the request sets no ``max_tokens``.
    """

    def __init__(
        self,
        provider: Provider,
        client: httpx.AsyncClient,
        *,
        name: str,
        timeout: httpx.Timeout | None = None,
        default_max_tokens: int = 4096,
    ) -> None:
        self.name = name
        self._provider = provider
        self._client = client
        self._timeout = timeout
        self._default_max_tokens = default_max_tokens
        self._closed = False

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ports.ChatEvent, None]:
        """Stream tokens and tool-call pieces, then ``Usage``, then one ``Done``; or end with one
        ``ErrorEvent``."""
        provider = self._provider
        state = _StreamState()
        try:
            if self._closed:
                raise ModelUnavailable(f"Model {self.name!r} is closed.")
            body = anthropic_request(request, model=provider.model, default_max_tokens=self._default_max_tokens)
            async with contextlib.aclosing(self._pieces(body, state)) as pieces:
                async for piece in pieces:
                    yield piece
        except AppError as exc:
            yield error_event(exc, model=self.name, provider=provider.name)
            return
        prompt = state.input_tokens if state.input_tokens is not None else approximate_prompt_tokens(request)
        completion = state.output_tokens if state.output_tokens is not None else state.pieces
        yield Usage(prompt_tokens=prompt, completion_tokens=completion)
        finish = _FINISH_REASONS.get(state.stop_reason or "end_turn", state.stop_reason or "stop")
        yield ports.Done(model=self.name, finish_reason=finish, provider=provider.name,
                   stop_sequence=state.stop_sequence if state.stop_reason == "stop_sequence" else None)

    def _headers(self) -> dict[str, str]:
        headers = {"anthropic-version": self._provider.api_version or DEFAULT_VERSION}
        headers.update(self._provider.request_headers(default_auth=("x-api-key", "")))
        return headers

    async def _pieces(self, body: dict[str, Any], state: _StreamState) -> AsyncGenerator[Piece, None]:
        provider = self._provider
        async with open_stream(self._client, provider, provider.url("v1/messages"), body=body,
                               headers=self._headers(), timeout=self._timeout, error=anthropic_error) as answer:
            if answer.whole is not None:  # the whole message at once
                for piece in state.message(provider, _json_object(provider, answer.whole)):
                    yield piece
                return
            async for event in answer.events:
                if state.stopped:
                    continue  # read the body to its end, so the connection goes back to the pool
                for piece in state.apply(provider, event):
                    yield piece
        if not state.stopped:
            raise GatewayError(
                f"{provider.name} ended the stream before message_stop; the answer is incomplete.", retryable=True
            )


@dataclass(slots=True)
class _StreamState:
    """What the events said so far. Tool calls are numbered in order of appearance (``tool_index`` maps a
    content-block index to it)."""

    input_tokens: int | None = None
    output_tokens: int | None = None
    stop_reason: str | None = None
    stop_sequence: str | None = None
    stopped: bool = False
    pieces: int = 0
    tool_index: dict[int, int] = field(default_factory=dict)

    def apply(self, provider: Provider, event: ServerSentEvent) -> list[Piece]:
        payload = _json_object(provider, event.data)
        kind = payload.get("type")
        if event.event == "error" or kind == "error":
            raise anthropic_error(provider, payload, status=None)
        pieces: list[Piece] = []
        if kind == "message_start":
            self._usage(provider, _field(provider, payload, "message", dict).get("usage"))
        elif kind == "content_block_start":
            index = _field(provider, payload, "index", int)
            block = _field(provider, payload, "content_block", dict)
            pieces = self._block(provider, index, block, streamed=True)
        elif kind == "content_block_delta":
            pieces = self._delta(provider, _field(provider, payload, "index", int),
                                 _field(provider, payload, "delta", dict))  # fmt: skip
        elif kind == "message_delta":
            delta = _field(provider, payload, "delta", dict)
            self._stopped_by(delta)
            self._usage(provider, payload.get("usage"))
        elif kind == "message_stop":
            self.stopped = True
        elif not isinstance(kind, str):
            raise _malformed(provider)
        # "ping", "content_block_stop" and event types added later carry nothing for us.
        self.pieces += len(pieces)
        return pieces

    def message(self, provider: Provider, payload: dict[str, Any]) -> list[Piece]:
        """The pieces of a non-streamed message."""
        if payload.get("type") == "error":
            raise anthropic_error(provider, payload, status=None)
        content = _field(provider, payload, "content", list)
        pieces: list[Piece] = []
        for index, block in enumerate(content):
            if not isinstance(block, dict):
                raise _malformed(provider)
            pieces.extend(self._block(provider, index, block, streamed=False))
        self._stopped_by(payload)
        self._usage(provider, payload.get("usage"))
        self.stopped = True
        self.pieces += len(pieces)
        return pieces

    def _stopped_by(self, payload: dict[str, Any]) -> None:
        if isinstance(payload.get("stop_reason"), str):
            self.stop_reason = payload["stop_reason"]
        if isinstance(payload.get("stop_sequence"), str):
            self.stop_sequence = payload["stop_sequence"]

    def _block(self, provider: Provider, index: int, block: dict[str, Any], *, streamed: bool) -> list[Piece]:
        if block.get("type") == "text":
            text = block.get("text")
            return [ports.Token(text)] if isinstance(text, str) and text else []
        if block.get("type") != "tool_use":
            return []  # thinking, server tools...: nothing the port carries
        call_id, name, tool_input = block.get("id"), block.get("name"), block.get("input")
        if not isinstance(call_id, str) or not isinstance(name, str):
            raise _malformed(provider)
        self.tool_index[index] = len(self.tool_index)
        # Streamed, ``input`` is ``{}`` and the arguments follow as ``input_json_delta``s.
        arguments = json.dumps(tool_input) if tool_input or not streamed else ""
        return [ports.ToolCallDelta(index=self.tool_index[index], id=call_id, name=name, arguments=arguments)]

    def _delta(self, provider: Provider, index: int, delta: dict[str, Any]) -> list[Piece]:
        kind = delta.get("type")
        if kind == "text_delta":
            text = delta.get("text")
            if not isinstance(text, str):
                raise _malformed(provider)
            return [ports.Token(text)] if text else []
        if kind == "input_json_delta":
            partial = delta.get("partial_json")
            if index not in self.tool_index or not isinstance(partial, str):
                raise _malformed(provider)
            return [ports.ToolCallDelta(index=self.tool_index[index], arguments=partial)] if partial else []
        return []  # thinking_delta, signature_delta, citations_delta

    def _usage(self, provider: Provider, usage: object) -> None:
        if usage is None:
            return
        if not isinstance(usage, dict):
            raise _malformed(provider)
        counts = {k: v for k, v in usage.items() if isinstance(v, int)}
        if "input_tokens" in counts:  # Anthropic's input_tokens leave out the cached part: add it back
            self.input_tokens = sum(
                counts.get(k, 0) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
            )
        if "output_tokens" in counts:
            self.output_tokens = counts["output_tokens"]


def anthropic_request(request: ChatRequest, *, model: str, default_max_tokens: int = 4096) -> dict[str, Any]:
    """The Messages API body for ``request`` (streaming); raises ``InvalidRequest`` for what Anthropic's
    format cannot carry."""
    system = [m.text for m in request.messages if m.role == "system" and m.text]
    turns: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role == "system":
            continue
        role, blocks = _turn(message)
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        _tidy(turn)
    body: dict[str, Any] = {k: plain_json(v) for k, v in request.extra.items() if k in _PASSTHROUGH}
    body.update(
        model=model,
        messages=turns,
        max_tokens=request.max_tokens if request.max_tokens is not None else default_max_tokens,
        stream=request.stream,
    )
    if system:
        body["system"] = "\n\n".join(system)
    if request.temperature is not None:
        body["temperature"] = min(request.temperature, 1.0)
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    if request.tools:
        has_tool_blocks = any(m.tool_calls or m.role == "tool" for m in request.messages)
        choice = _tool_choice(request.tool_choice, has_tool_blocks)
        if choice is not False:
            body["tools"] = [_tool(tool) for tool in request.tools]
            if request.extra.get("parallel_tool_calls") is False and choice != {"type": "none"}:
                choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
            if choice:
                body["tool_choice"] = choice
    return body


def anthropic_error(
    provider: Provider, payload: dict[str, Any], *, status: int | None, retry_after: float | None = None
) -> GatewayError:
    """Map an HTTP status and/or an Anthropic ``{"type": "error", "error": {"type", "message"}}`` body."""
    error = payload.get("error")
    kind = str(error.get("type") or "") if isinstance(error, dict) else ""
    detail = error.get("message") if isinstance(error, dict) else None
    return upstream_error(provider, status=status, kind=kind, detail=detail, retry_after=retry_after)


def _turn(message: ChatMessage) -> tuple[str, list[dict[str, Any]]]:
    if message.role == "tool":
        if not message.tool_call_id:
            raise InvalidRequest("A tool message needs the tool_call_id it answers.")
        content: Any = message.content if isinstance(message.content, str) else _blocks(message.content)
        return "user", [{"type": "tool_result", "tool_use_id": message.tool_call_id, "content": content}]
    blocks: list[dict[str, Any]] = (
        [{"type": "text", "text": message.content}] if isinstance(message.content, str) else _blocks(message.content)
    )
    for call in message.tool_calls:
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": _arguments(call.arguments)})
    return message.role, blocks


def _tidy(turn: dict[str, Any]) -> None:
    """Drop empty text blocks, put tool results first, and send a lone text block as a plain string."""
    blocks = [b for b in turn["content"] if not (b["type"] == "text" and not b["text"])]
    blocks.sort(key=lambda block: block["type"] != "tool_result")  # stable: the rest keep their order
    if not blocks:
        turn["content"] = ""
    elif len(blocks) == 1 and blocks[0]["type"] == "text":
        turn["content"] = blocks[0]["text"]
    else:
        turn["content"] = blocks


def _blocks(parts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for part in parts:
        kind = part.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "image_url":
            blocks.append(_image(part.get("image_url")))
        else:
            raise InvalidRequest(f"Anthropic's format cannot carry a {kind!r} content part.")
    return blocks


def _image(image_url: object) -> dict[str, Any]:
    url = image_url.get("url") if isinstance(image_url, Mapping) else image_url
    if not isinstance(url, str):
        raise InvalidRequest("An image_url part needs a url.")
    match = _DATA_URL.match(url)
    if match:
        source = {"type": "base64", "media_type": match["media_type"], "data": match["data"]}
        return {"type": "image", "source": source}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise InvalidRequest("An image must be a base64 data URL or an http(s) URL.")


def _arguments(arguments: str) -> dict[str, Any]:
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except ValueError:
        raise InvalidRequest("A tool call's arguments are not valid JSON.") from None
    if not isinstance(value, dict):
        raise InvalidRequest("A tool call's arguments must be a JSON object.")
    return value


def _tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    function = tool.get("function")
    if tool.get("type", "function") != "function" or not isinstance(function, Mapping) or not function.get("name"):
        raise InvalidRequest("Only function tools with a name can be sent in Anthropic's format.")
    out: dict[str, Any] = {"name": function["name"], "input_schema": plain_json(function.get("parameters"))
                           or _EMPTY_SCHEMA}  # fmt: skip
    if function.get("description"):
        out["description"] = function["description"]
    return out


def _tool_choice(choice: Any, has_tool_blocks: bool) -> dict[str, Any] | Literal[False] | None:
    """Anthropic's ``tool_choice``; ``None`` = leave it out, ``False`` = send no tools at all."""
    if choice is None or choice == "auto":
        return {"type": "auto"} if choice else None
    if choice in ("required", "any"):
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"} if has_tool_blocks else False
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        function = choice.get("function")
        if isinstance(function, Mapping) and function.get("name"):
            return {"type": "tool", "name": function["name"]}
    raise InvalidRequest(f"Unsupported tool_choice {choice!r}.")


def _json_object(provider: Provider, raw: str | bytes) -> dict[str, Any]:
    try:
        payload = json.loads(raw)
    except ValueError:
        raise _malformed(provider) from None
    if not isinstance(payload, dict):
        raise _malformed(provider)
    return payload


def _field(provider: Provider, payload: dict[str, Any], key: str, kind: type) -> Any:
    value = payload.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _malformed(provider)
    return value


def _malformed(provider: Provider) -> GatewayError:
    return GatewayError(f"{provider.name} sent a malformed stream event.", retryable=True)
