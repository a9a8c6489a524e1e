"""OpenAI's shapes, loosely: the main fields, any other key allowed (``View``)."""

from __future__ import annotations

from typing import Any, Literal

from atrium.http.schemas.common import TokenUsage, View


class ToolCallFunction(View):
    name: str
    arguments: str


class ToolCall(View):
    id: str
    type: Literal["function"]
    function: ToolCallFunction


class AssistantMessage(View):
    role: Literal["assistant"]
    content: str | None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None


class Choice(View):
    index: int
    message: AssistantMessage
    logprobs: Any = None
    finish_reason: str | None


class ChatCompletion(View):
    """A ``chat.completion`` object; with ``stream: true`` the answer is ``chat.completion.chunk`` events
    (Server-Sent Events) ending with ``data: [DONE]``."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: TokenUsage
    system_fingerprint: str | None = None


class Embedding(View):
    object: Literal["embedding"]
    index: int
    embedding: list[float] | str  # str: base64 of little-endian float32 (``encoding_format: base64``)


class EmbeddingsUsage(View):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(View):
    object: Literal["list"]
    data: list[Embedding]
    model: str
    usage: EmbeddingsUsage


class ModelCard(View):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    kind: Literal["chat", "embedding", "route"] | str
    alias_of: str | None = None  # only on an alias: the model it names


class ModelList(View):
    object: Literal["list"]
    data: list[ModelCard]
