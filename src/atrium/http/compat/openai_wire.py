"""OpenAI's chat-completions and embeddings formats: request bodies -> ``ChatRequest``, gateway events ->
``chat.completion`` objects and ``chat.completion.chunk`` SSE frames, exactly as OpenAI sends them.

Stream framing (what the official SDK and LangChain parse): a first chunk with ``delta.role``, content
and ``tool_calls`` deltas, a last chunk with ``finish_reason``, a usage chunk with empty ``choices`` when
``stream_options.include_usage`` is set, then ``data: [DONE]``. A stream that fails after output began
ends with OpenAI's in-stream error ``data: {"error": {...}}`` and no ``[DONE]``, so the SDK raises
instead of reporting a normal finish.
"""

from __future__ import annotations

import base64
import os
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator

from atrium.errors import AppError, GatewayError, InvalidRequest, PayloadTooLarge
from atrium.gateway import ports
from atrium.gateway.ports import ChatMessage, ChatRequest, Usage
from atrium.http.compat.bodies import MAX_MESSAGES, MAX_STOP, MAX_TOOLS, LenientBody
from atrium.http.compat.streams import MAX_TOOL_DESCRIPTION, Answer, StopString, dumps, error_from_event, text_of_parts
from atrium.http.errors import openai_error_body

MAX_EMBEDDING_INPUTS = 2048
# Vendor parameters passed on to the model through ``ChatRequest.extra`` (others are accepted and ignored).
PASSED_PARAMS = ("top_p", "seed", "presence_penalty", "frequency_penalty", "logit_bias", "parallel_tool_calls",
                 "user")
_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class FunctionCall(LenientBody):
    name: str = Field(min_length=1, max_length=256)
    arguments: str = Field("", max_length=1_000_000)


class MessageToolCall(LenientBody):
    id: str = Field(min_length=1, max_length=256)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatCompletionMessageParam(LenientBody):
    """One message of a chat-completions request (OpenAI's ``ChatCompletionMessageParam``)."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = Field(None, max_length=256)
    tool_calls: list[MessageToolCall] | None = Field(None, max_length=MAX_TOOLS)
    tool_call_id: str | None = Field(None, max_length=256)


class FunctionDefinition(LenientBody):
    name: str
    description: str | None = Field(None, max_length=MAX_TOOL_DESCRIPTION)
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _FUNCTION_NAME.match(value):
            raise ValueError("must be 1-64 characters of a-z, A-Z, 0-9, _ and -")
        return value


class Tool(LenientBody):
    type: Literal["function"]
    function: FunctionDefinition


class NamedToolChoice(LenientBody):
    type: Literal["function"]
    function: dict[str, str]


class ResponseFormat(LenientBody):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class StreamOptions(LenientBody):
    include_usage: bool = False


class ChatCompletionBody(LenientBody):
    model: str = Field(min_length=1, max_length=256)
    messages: list[ChatCompletionMessageParam] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    stop: StopString | Annotated[list[StopString], Field(max_length=MAX_STOP)] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    tools: list[Tool] | None = Field(None, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    response_format: ResponseFormat | None = None
    n: int | None = Field(None, ge=1)
    seed: int | None = None
    user: str | None = Field(None, max_length=256)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    parallel_tool_calls: bool | None = None
    cache: bool | None = None  # Atrium's: false skips the response cache


def to_chat_request(body: ChatCompletionBody, context: ports.CallContext, *, max_message_chars: int) -> ChatRequest:
    """The gateway request for an OpenAI body; raises ``InvalidRequest``/``PayloadTooLarge``."""
    if body.n not in (None, 1):
        raise InvalidRequest("Only n=1 is supported.", code="unsupported_parameter")
    if body.tool_choice is not None and not body.tools:
        raise InvalidRequest("tool_choice is only allowed when tools are specified.")
    if body.response_format is not None and body.response_format.type == "json_schema":
        schema = body.response_format.json_schema
        if not isinstance(schema, dict) or not isinstance(schema.get("name"), str):
            raise InvalidRequest("response_format.json_schema needs a 'name' and a 'schema'.")
    messages = tuple(_message(i, m, max_message_chars) for i, m in enumerate(body.messages))
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    extra = {name: value for name in PASSED_PARAMS if (value := getattr(body, name)) is not None}
    tool_choice = (body.tool_choice.model_dump(exclude_none=True) if isinstance(body.tool_choice, BaseModel)
                   else body.tool_choice)
    return ChatRequest(
        messages=messages,
        max_tokens=body.max_completion_tokens or body.max_tokens,
        temperature=body.temperature,
        stop=stop,
        model=body.model,
        tools=tuple(t.model_dump(exclude_none=True) for t in body.tools or ()),
        tool_choice=tool_choice,
        response_format=body.response_format.model_dump(exclude_none=True) if body.response_format else None,
        extra=extra,
        context=context,
        stream=bool(body.stream),
    )


def _message(index: int, message: ChatCompletionMessageParam, limit: int) -> ChatMessage:
    where = f"messages[{index}]"
    content = _content(where, message)
    text = content if isinstance(content, str) else "".join(str(p.get("text", "")) for p in content)
    if len(text) > limit:
        raise PayloadTooLarge(f"{where}.content is {len(text)} characters; the limit is {limit}.")
    if message.role == "tool" and not message.tool_call_id:
        raise InvalidRequest(f"{where}: a tool message needs 'tool_call_id'.")
    calls = tuple(ports.ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments)
                  for c in message.tool_calls or ()) if message.role == "assistant" else ()
    if message.role != "assistant" and message.tool_calls:
        raise InvalidRequest(f"{where}: only assistant messages carry 'tool_calls'.")
    if message.role == "assistant" and not calls and content == "" and message.content is None:
        raise InvalidRequest(f"{where}: an assistant message needs 'content' or 'tool_calls'.")
    return ChatMessage(role="system" if message.role == "developer" else message.role, content=content,
                       tool_calls=calls, tool_call_id=message.tool_call_id if message.role == "tool" else None,
                       name=message.name)


def _content(where: str, message: ChatCompletionMessageParam) -> ports.Content:
    content = message.content
    if content is None:
        if message.role in ("assistant",):
            return ""
        raise InvalidRequest(f"{where}.content is required for a {message.role} message.")
    if isinstance(content, str):
        return content
    text = text_of_parts(content)
    if text is not None:
        return text
    if message.role != "user":
        raise InvalidRequest(f"{where}.content: a {message.role} message takes text parts only.")
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "image_url" and isinstance(part.get("image_url"), dict) \
                and isinstance(part["image_url"].get("url"), str):
            parts.append({"type": "image_url", "image_url": part["image_url"]})
        else:
            raise InvalidRequest(f"{where}.content[{i}]: unsupported content part type {str(kind)[:40]!r} "
                                 "(text and image_url are supported).")
    return tuple(parts)


def finish_reason(answer_finish: str, has_tool_calls: bool) -> str:
    """OpenAI's finish reason: ``tool_calls`` whenever the answer is tool calls."""
    if has_tool_calls and answer_finish in ("stop", "tool_calls", "tool_use", "end_turn"):
        return "tool_calls"
    return {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
            "refusal": "content_filter"}.get(answer_finish, answer_finish)


def new_completion_id() -> str:
    return f"chatcmpl-{os.urandom(16).hex()}"


def completion(answer: Answer, usage: Usage, *, completion_id: str, created: int) -> dict[str, Any]:
    """A ``chat.completion`` object."""
    tool_calls = [{"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                  for c in answer.tool_calls]
    message: dict[str, Any] = {"role": "assistant",
                               "content": answer.text if answer.text or not tool_calls else None,
                               "refusal": None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": completion_id, "object": "chat.completion", "created": created, "model": answer.model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": finish_reason(answer.finish_reason, bool(tool_calls))}],
        "usage": _usage(usage), "system_fingerprint": None,
    }


def _usage(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens}


def _frame(payload: object) -> str:
    return f"data: {dumps(payload)}\n\n"


def error_frame(exc: AppError) -> str:
    """OpenAI's in-stream error event: ``data: {"error": {"message", "type", "param", "code"}}``."""
    return _frame(openai_error_body(exc.status_code, exc.code, exc.message))


_TEXT_SLOT = "\x00atrium-text-slot\x00"


async def completion_chunks(events: AsyncIterator[ports.ChatEvent], *, model: str, include_usage: bool,
                            estimate: Callable[[str], Usage]) -> AsyncGenerator[str, None]:
    """``chat.completion.chunk`` SSE frames for a stream that has begun (see the module docstring).
    ``estimate(text)`` gives the usage when the provider sent none."""
    completion_id, created = new_completion_id(), int(time.time())
    base: dict[str, Any] = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                            "model": model, "system_fingerprint": None}
    if include_usage:
        base["usage"] = None

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        return _frame({**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]})

    # A content chunk is the same frame each time but for its text: rendered once, filled per token.
    head, _, tail = chunk({"content": _TEXT_SLOT}).partition(dumps(_TEXT_SLOT))

    # The role frame goes out with the first frame after it: one write to the client, not two.
    lead = chunk({"role": "assistant", "content": "", "refusal": None})
    texts: list[str] = []
    usage: Usage | None = None
    tool_calls = False
    async for event in events:
        match event:
            case ports.Token(text=text) if text:
                texts.append(text)
                yield lead + head + dumps(text) + tail
                lead = ""
            case ports.ToolCallDelta():
                tool_calls = True
                yield lead + chunk({"tool_calls": [_tool_call_delta(event)]})
                lead = ""
            case Usage():
                usage = event
            case ports.ErrorEvent():
                yield lead + error_frame(error_from_event(event))
                return
            case ports.Done():
                frames = [lead, chunk({}, finish_reason(event.finish_reason, tool_calls))]
                if include_usage:
                    usage = usage or estimate("".join(texts))
                    frames.append(_frame({**base, "choices": [], "usage": _usage(usage)}))
                frames.append("data: [DONE]\n\n")
                yield "".join(frames)
                return
    yield lead + error_frame(GatewayError("The model ended its stream without a final event."))


def _tool_call_delta(event: ports.ToolCallDelta) -> dict[str, Any]:
    delta: dict[str, Any] = {"index": event.index}
    function: dict[str, str] = {"arguments": event.arguments}
    if event.id is not None:
        delta.update(id=event.id, type="function")
    if event.name is not None:
        function["name"] = event.name
    delta["function"] = function
    return delta


# --- embeddings -----------------------------------------------------------------------------------------


class EmbeddingsBody(LenientBody):
    model: str = Field(min_length=1, max_length=256)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = Field(None, max_length=256)


def embedding_texts(body: EmbeddingsBody, *, max_chars: int) -> list[str]:
    """The texts to embed; token arrays are refused (Atrium's embedders tokenize themselves)."""
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise InvalidRequest("input must not be empty.", code="invalid_value")
    if not all(isinstance(t, str) for t in texts):
        raise InvalidRequest("Token-array input is not supported; send strings.", code="unsupported_value")
    if len(texts) > MAX_EMBEDDING_INPUTS:
        raise InvalidRequest(f"input has {len(texts)} items; the limit is {MAX_EMBEDDING_INPUTS}.",
                             code="invalid_value")
    strings = [str(t) for t in texts]
    for i, text in enumerate(strings):
        if not text:
            raise InvalidRequest(f"input[{i}] is empty.", code="invalid_value")
        if len(text) > max_chars:
            raise PayloadTooLarge(f"input[{i}] is {len(text)} characters; the limit is {max_chars}.")
    return strings


# Embedding models trained so that a prefix of the vector is itself a good embedding (Matryoshka):
# only these may be shortened with ``dimensions``.
_MATRYOSHKA = re.compile(r"(?i)text-embedding-3|nomic-embed-text-v1\.5|qwen3-embedding|jina-embeddings-v3|"
                         r"mxbai-embed|arctic-embed-m-v1\.5|arctic-embed-l-v2|gemini-embedding|embeddinggemma")


def supports_dimensions(upstream_model: str) -> bool:
    return bool(_MATRYOSHKA.search(upstream_model))


def shorten(vectors: np.ndarray, dimensions: int) -> np.ndarray:
    """The first ``dimensions`` components, renormalised to unit length."""
    cut = np.asarray(vectors[:, :dimensions], dtype=np.float32)
    norms = np.linalg.norm(cut, axis=1, keepdims=True)
    return np.divide(cut, norms, out=np.zeros_like(cut), where=norms > 0)


def embeddings_response(vectors: np.ndarray, *, model: str, prompt_tokens: int,
                        encoding_format: str) -> dict[str, Any]:
    data = []
    for index, vector in enumerate(np.asarray(vectors, dtype=np.float32)):
        value: str | list[float] = (base64.b64encode(vector.astype("<f4").tobytes()).decode()
                                    if encoding_format == "base64" else vector.tolist())
        data.append({"object": "embedding", "index": index, "embedding": value})
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}}
