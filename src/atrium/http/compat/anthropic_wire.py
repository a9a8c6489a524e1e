"""Anthropic's Messages format: request bodies -> ``ChatRequest`` (the gateway speaks OpenAI's dialect of
tools and content parts), gateway events -> ``message`` objects and Messages SSE events.

Stream order, as Anthropic sends it and the official SDK's ``messages.stream`` expects: ``message_start``,
then per content block ``content_block_start``, ``content_block_delta`` (``text_delta`` or
``input_json_delta``)..., ``content_block_stop`` (a ``ping`` right after the first block starts), then
``message_delta`` (stop reason, usage) and ``message_stop``. A stream that fails after it began ends with
``event: error`` and no ``message_stop``, so the SDK raises.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, Literal

from pydantic import Field

from atrium.errors import AppError, GatewayError, InvalidRequest, PayloadTooLarge
from atrium.gateway import ports
from atrium.gateway.ports import ChatMessage, ChatRequest, Usage
from atrium.http.compat.bodies import MAX_MESSAGES, MAX_STOP, MAX_TOOLS, LenientBody
from atrium.http.compat.streams import MAX_TOOL_DESCRIPTION, Answer, StopString, dumps, error_from_event
from atrium.http.errors import anthropic_error_body


class AnthropicMessage(LenientBody):
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class AnthropicTool(LenientBody):
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]{1,128}$")
    description: str | None = Field(None, max_length=MAX_TOOL_DESCRIPTION)
    input_schema: dict[str, Any]
    type: str | None = None


class AnthropicToolChoice(LenientBody):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class MessagesBody(LenientBody):
    model: str = Field(min_length=1, max_length=256)
    max_tokens: int = Field(ge=1)
    messages: list[AnthropicMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    system: str | list[dict[str, Any]] | None = None
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=1)
    stop_sequences: list[StopString] | None = Field(None, max_length=MAX_STOP)
    stream: bool | None = False
    tools: list[AnthropicTool] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: AnthropicToolChoice | None = None
    metadata: dict[str, Any] | None = None
    cache: bool | None = None  # Atrium's: false skips the response cache


def to_chat_request(body: MessagesBody, context: ports.CallContext, *, max_message_chars: int) -> ChatRequest:
    """The gateway request for an Anthropic body; raises ``InvalidRequest``/``PayloadTooLarge``."""
    messages: list[ChatMessage] = []
    if body.system:
        system = body.system if isinstance(body.system, str) else _texts("system", body.system)
        messages.append(ChatMessage(role="system", content=system))
    for i, message in enumerate(body.messages):
        messages.extend(_messages(f"messages[{i}]", message))
    for translated in messages:
        if len(translated.text) > max_message_chars:
            raise PayloadTooLarge(f"A message is {len(translated.text)} characters; the limit is "
                                  f"{max_message_chars}.")
    extra: dict[str, object] = {}
    if body.top_p is not None:
        extra["top_p"] = body.top_p
    if body.top_k is not None:
        extra["top_k"] = body.top_k
    user = (body.metadata or {}).get("user_id")
    if isinstance(user, str) and user:
        extra["user"] = user[:256]
    tools = tuple(_tool(i, t) for i, t in enumerate(body.tools or ()))
    tool_choice: Any = None
    if body.tool_choice is not None:
        tool_choice = _tool_choice(body.tool_choice)
        if body.tool_choice.disable_parallel_tool_use:
            extra["parallel_tool_calls"] = False
    return ChatRequest(messages=tuple(messages), max_tokens=body.max_tokens, temperature=body.temperature,
                       stop=tuple(body.stop_sequences or ()), model=body.model, tools=tools,
                       tool_choice=tool_choice, extra=extra, context=context,
                       stream=bool(body.stream))


def _texts(where: str, blocks: list[dict[str, Any]]) -> str:
    texts = []
    for i, block in enumerate(blocks):
        if block.get("type") != "text" or not isinstance(block.get("text"), str):
            raise InvalidRequest(f"{where}[{i}]: only text blocks are allowed here.")
        texts.append(block["text"])
    return "\n".join(texts)


def _messages(where: str, message: AnthropicMessage) -> list[ChatMessage]:
    if isinstance(message.content, str):
        return [ChatMessage(role=message.role, content=message.content)]
    if message.role == "assistant":
        return [_assistant(where, message.content)]
    out: list[ChatMessage] = []
    parts: list[dict[str, Any]] = []
    for i, block in enumerate(message.content):
        kind = block.get("type")
        if kind == "tool_result":
            if parts:
                out.append(ChatMessage(role="user", content=_user_content(parts)))
                parts = []
            out.append(_tool_result(f"{where}.content[{i}]", block))
        elif kind == "text" and isinstance(block.get("text"), str):
            parts.append({"type": "text", "text": block["text"]})
        elif kind == "image":
            parts.append(_image(f"{where}.content[{i}]", block))
        else:
            raise InvalidRequest(f"{where}.content[{i}]: unsupported block type {str(kind)[:40]!r} in a user "
                                 "message (text, image and tool_result are supported).")
    if parts:
        out.append(ChatMessage(role="user", content=_user_content(parts)))
    return out


def _user_content(parts: list[dict[str, Any]]) -> ports.Content:
    if all(p["type"] == "text" for p in parts):
        return "\n".join(p["text"] for p in parts)
    return tuple(parts)


def _assistant(where: str, blocks: list[dict[str, Any]]) -> ChatMessage:
    texts: list[str] = []
    calls: list[ports.ToolCall] = []
    for i, block in enumerate(blocks):
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use":
            call_id, name = block.get("id"), block.get("name")
            if not isinstance(call_id, str) or not isinstance(name, str) or not call_id or not name:
                raise InvalidRequest(f"{where}.content[{i}]: a tool_use block needs 'id' and 'name'.")
            calls.append(ports.ToolCall(id=call_id, name=name, arguments=dumps(block.get("input") or {})))
        elif kind in ("thinking", "redacted_thinking"):
            continue  # the model's reasoning of an earlier turn: not replayed to other providers
        else:
            raise InvalidRequest(f"{where}.content[{i}]: unsupported block type {str(kind)[:40]!r} in an "
                                 "assistant message (text and tool_use are supported).")
    return ChatMessage(role="assistant", content="".join(texts), tool_calls=tuple(calls))


def _tool_result(where: str, block: dict[str, Any]) -> ChatMessage:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise InvalidRequest(f"{where}: a tool_result block needs 'tool_use_id'.")
    content = block.get("content", "")
    if isinstance(content, list):
        content = _texts(f"{where}.content", content)
    elif not isinstance(content, str):
        raise InvalidRequest(f"{where}.content must be a string or text blocks.")
    if block.get("is_error"):
        content = f"Error: {content}"
    return ChatMessage(role="tool", content=content, tool_call_id=call_id)


def _image(where: str, block: dict[str, Any]) -> dict[str, Any]:
    source = block.get("source")
    if isinstance(source, dict) and source.get("type") == "base64" \
            and isinstance(source.get("data"), str) and isinstance(source.get("media_type"), str):
        url = f"data:{source['media_type']};base64,{source['data']}"
    elif isinstance(source, dict) and source.get("type") == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        raise InvalidRequest(f"{where}: an image needs a base64 or url source.")
    return {"type": "image_url", "image_url": {"url": url}}


def _tool(index: int, tool: AnthropicTool) -> dict[str, Any]:
    if tool.type not in (None, "custom"):
        raise InvalidRequest(f"tools[{index}]: server tools ({tool.type[:40]!r}) are not supported.")
    function: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema}
    if tool.description:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def _tool_choice(choice: AnthropicToolChoice) -> Any:
    if choice.type == "tool":
        if not choice.name:
            raise InvalidRequest("tool_choice: type 'tool' needs a 'name'.")
        return {"type": "function", "function": {"name": choice.name}}
    return {"auto": "auto", "any": "required", "none": "none"}[choice.type]


def stop_reason(finish_reason: str, has_tool_calls: bool, stop_sequence: str | None = None) -> str:
    if stop_sequence is not None and finish_reason == "stop":
        return "stop_sequence"
    if has_tool_calls and finish_reason in ("stop", "tool_calls", "tool_use", "end_turn"):
        return "tool_use"
    return {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
            "content_filter": "refusal"}.get(finish_reason, finish_reason)


def new_message_id() -> str:
    return f"msg_{os.urandom(16).hex()}"


def _tool_input(arguments: str) -> Any:
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except ValueError:
        return {"_raw_arguments": arguments}  # the model wrote something that is not JSON: keep it visible
    return value if isinstance(value, dict) else {"_value": value}


def message(answer: Answer, usage: Usage, *, message_id: str) -> dict[str, Any]:
    """A ``message`` object."""
    content: list[dict[str, Any]] = []
    if answer.text or not answer.tool_calls:
        content.append({"type": "text", "text": answer.text})
    content.extend({"type": "tool_use", "id": c.id, "name": c.name, "input": _tool_input(c.arguments)}
                   for c in answer.tool_calls)
    return {"id": message_id, "type": "message", "role": "assistant", "model": answer.model, "content": content,
            "stop_reason": stop_reason(answer.finish_reason, bool(answer.tool_calls), answer.stop_sequence),
            "stop_sequence": answer.stop_sequence,
            "usage": {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens}}


def _event(name: str, payload: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {dumps({'type': name, **payload})}\n\n"


def error_event(exc: AppError) -> str:
    body = anthropic_error_body(exc.status_code, exc.message)
    return f"event: error\ndata: {dumps(body)}\n\n"


async def message_events(events: AsyncIterator[ports.ChatEvent], *, model: str,
                         estimate: Callable[[str], Usage]) -> AsyncGenerator[str, None]:
    """Messages SSE events for a stream that has begun (see the module docstring). ``estimate(text)``
    gives the usage when the provider sent none."""
    yield _event("message_start", {"message": {
        "id": new_message_id(), "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}})
    blocks = _Blocks()
    texts: list[str] = []
    usage: Usage | None = None
    async for event in events:
        match event:
            case ports.Token(text=text) if text:
                texts.append(text)
                for frame in blocks.text(text):
                    yield frame
            case ports.ToolCallDelta():
                texts.append(event.arguments)
                for frame in blocks.tool(event):
                    yield frame
            case Usage():
                usage = event
            case ports.ErrorEvent():
                yield error_event(error_from_event(event))
                return
            case ports.Done():
                for frame in blocks.finish():
                    yield frame
                usage = usage or estimate("".join(texts))
                yield _event("message_delta", {
                    "delta": {"stop_reason": stop_reason(event.finish_reason, blocks.had_tool_calls,
                                                         event.stop_sequence),
                              "stop_sequence": event.stop_sequence},
                    "usage": {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens}})
                yield _event("message_stop", {})
                return
    yield error_event(GatewayError("The model ended its stream without a final event."))


class _Blocks:
    """Content blocks as Anthropic streams them: one open at a time, numbered from 0."""

    def __init__(self) -> None:
        self.count = 0
        self.had_tool_calls = False
        self._open: tuple[str, int] | None = None  # ("text", -1) or ("tool", call index)
        self._pinged = False

    def _start(self, key: tuple[str, int], block: dict[str, Any]) -> list[str]:
        frames = self._stop()
        self._open = key
        frames.append(_event("content_block_start", {"index": self.count, "content_block": block}))
        if not self._pinged:
            self._pinged = True
            frames.append(_event("ping", {}))
        return frames

    def _stop(self) -> list[str]:
        if self._open is None:
            return []
        self._open = None
        self.count += 1
        return [_event("content_block_stop", {"index": self.count - 1})]

    def text(self, text: str) -> list[str]:
        frames = [] if self._open == ("text", -1) else self._start(("text", -1), {"type": "text", "text": ""})
        frames.append(_event("content_block_delta", {"index": self.count,
                                                     "delta": {"type": "text_delta", "text": text}}))
        return frames

    def tool(self, delta: ports.ToolCallDelta) -> list[str]:
        self.had_tool_calls = True
        frames = []
        if self._open != ("tool", delta.index):
            frames = self._start(("tool", delta.index), {
                "type": "tool_use", "id": delta.id or f"toolu_{os.urandom(12).hex()}", "name": delta.name or "",
                "input": {}})
        if delta.arguments:
            frames.append(_event("content_block_delta", {
                "index": self.count, "delta": {"type": "input_json_delta", "partial_json": delta.arguments}}))
        return frames

    def finish(self) -> list[str]:
        frames = self._stop()
        if not self._pinged:
            frames.append(_event("ping", {}))
        return frames
