"""The ChatModel port: one async method that streams typed events.

Every adapter (local llama.cpp, OpenAI-format HTTP, fake) and every wrapper (fallback, retry, breaker,
metering, cache) implements this same port. A stream always ends with exactly one ``Done`` or ``ErrorEvent``;
``Usage`` comes before it when known.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True, slots=True)
class ChatRequest:
    messages: tuple[ChatMessage, ...]
    max_tokens: int = 512
    temperature: float = 0.2
    stop: tuple[str, ...] = ()
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    type: Literal["token"] = "token"


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    type: Literal["usage"] = "usage"

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class Done:
    model: str
    finish_reason: str = "stop"
    type: Literal["done"] = "done"


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    code: str
    message: str
    retryable: bool = False
    type: Literal["error"] = "error"


ChatEvent = Token | Usage | Done | ErrorEvent


@runtime_checkable
class ChatModel(Protocol):
    """A chat model. ``stream`` yields ``Token`` events, then ``Usage`` (if known), then one final
    ``Done`` or ``ErrorEvent``. Adapters never raise out of ``stream`` for provider failures: they end
    the stream with ``ErrorEvent`` instead. ``name`` is the model id reported to callers."""

    name: str

    def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]: ...

    async def ready(self) -> bool:
        """True when the model can serve a request now (used by ``/ready``)."""
        ...

    async def aclose(self) -> None: ...
