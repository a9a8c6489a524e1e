"""The gateway's ports: the models it calls and the stores its wrappers keep state in.

``ChatModel``: one async method that streams typed events. Every adapter (local llama.cpp, OpenAI-format
HTTP, fake) and every wrapper (fallback, retry, breaker, metering, cache) implements this same port. A stream
always ends with exactly one ``Done`` or ``ErrorEvent``; ``Usage`` comes before it when known.

``Embedder``: texts to vectors (float32, L2-normalised, shape ``(n, dimensions)``); the knowledge room
embeds its chunks with it (``kind="document"``) and its questions (``kind="query"``: models such as
Qwen3-Embedding or E5 prefix queries with an instruction), ``/v1/embeddings`` serves it.

``CacheStore`` (the response cache's bytes) and ``BreakerStore`` (circuit breaker state): in-process or
Redis (``cache_stores.py``, ``breaker_stores.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from atrium.errors import AppError

if TYPE_CHECKING:
    from atrium.gateway.catalogue import Route
    from atrium.gateway.settings import BreakerSettings

MessageRole = Literal["system", "user", "assistant", "tool"]
Task = Literal["chat", "qa", "artifact", "classify", "summarize"]

# Content is plain text, or OpenAI-style parts ({"type": "text", "text": ...}, {"type": "image_url", ...}).
Content = str | tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call the assistant asked for; ``arguments`` is the JSON text the model wrote."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: MessageRole
    content: Content
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None  # on a "tool" message: which call this is the result of
    name: str | None = None

    @property
    def text(self) -> str:
        """The text of the message (text parts joined; images left out)."""
        if isinstance(self.content, str):
            return self.content
        return "".join(str(part.get("text", "")) for part in self.content if part.get("type") == "text")


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is calling and why: used by routing (task, tenant policy), metering and the cache, never sent
    upstream. ``org_id`` scopes the cache: one tenant's cached answers are never served to another."""

    org_id: str | None = None
    user_id: str | None = None
    api_key_id: str | None = None
    endpoint: str = ""
    task: Task = "chat"
    cache: bool = True
    local_only: bool = False


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """What to generate. ``model`` names a catalogue entry, alias or route ("" = the default route);
    adapters ignore it (each adapter knows its own upstream model). ``tools`` are OpenAI-format function
    tools and ``response_format`` OpenAI's; adapters translate both to their wire format. ``extra`` holds
    other vendor parameters passed through verbatim (top_p, seed, ...).

    ``route``: the request's route, resolved once at the front (``Gateway.check`` and ``with_route``, or
    the outermost wrapper that needs it); every layer reuses it. A layer that changes what routing depends
    on (model, task, ``local_only``, tools, response format, images) carries the route it resolves anew.
    ``guarded``: the guard stages (``"input"``, ``"context"``) the use case already applied to this
    content (the grounded answerer: its question and its sources); the model call does not apply them
    again (``atrium.guard.pipeline``). Neither is sent upstream."""

    messages: tuple[ChatMessage, ...]
    max_tokens: int | None = 512
    temperature: float | None = 0.2
    stop: tuple[str, ...] = ()
    model: str = ""
    tools: tuple[Mapping[str, Any], ...] = ()
    tool_choice: Any = None
    response_format: Mapping[str, Any] | None = None
    extra: dict[str, object] = field(default_factory=dict)
    context: CallContext = field(default_factory=CallContext)
    # False when the caller only uses the whole answer: an adapter may then make one non-streamed upstream
    # call (cheaper, and a cut connection fails before any output, so fallback can still act). The events
    # are the same either way.
    stream: bool = True
    route: Route | None = None
    guarded: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    type: Literal["token"] = "token"


@dataclass(frozen=True, slots=True)
class Start:
    """Sent by the router once a model has begun to answer (just before its first output), naming the
    catalogue model and provider that serve this request. Adapters do not send it; consumers that do not
    care ignore it."""

    model: str
    provider: str = ""
    type: Literal["start"] = "start"


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a tool call, streamed like OpenAI's ``delta.tool_calls[i]``: the first piece of call
    ``index`` carries ``id`` and ``name``; later pieces append to ``arguments``."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    type: Literal["tool_call"] = "tool_call"


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
    """The generation finished. ``model`` is the catalogue name of the model that served (adapters
    report their own name; the router keeps it), ``provider`` the provider entry that served it."""

    model: str
    finish_reason: str = "stop"
    provider: str = ""
    cached: bool = False
    # The stop sequence that ended the answer (``finish_reason`` is then "stop"), when the provider says
    # which: Anthropic's API does, the OpenAI format does not.
    stop_sequence: str | None = None
    type: Literal["done"] = "done"


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """The stream failed. ``retryable``: another attempt may succeed; ``retry_after``: the upstream said
    how long to wait (seconds); ``model``/``provider``: who failed, when known."""

    code: str
    message: str
    retryable: bool = False
    retry_after: float | None = None
    model: str = ""
    provider: str = ""
    type: Literal["error"] = "error"


ChatEvent = Start | Token | ToolCallDelta | Usage | Done | ErrorEvent


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


Vectors = npt.NDArray[np.float32]
EmbedKind = Literal["document", "query"]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into normalised vectors. CPU-heavy work runs off the event loop. ``kind`` says what the
    texts are: an adapter with a query instruction prefix applies it to ``"query"`` texts only; a cache in
    front of an embedder must key by it."""

    name: str
    dimensions: int

    async def embed(self, texts: Sequence[str], *, kind: EmbedKind = "document") -> Vectors: ...

    def count_tokens(self, text: str) -> int:
        """Tokens the embedding model sees for ``text`` (used to size chunks)."""
        ...


class CacheStore(Protocol):
    """Bytes by key with a time to live."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def aclose(self) -> None: ...


BreakerState = Literal["closed", "open", "half_open"]
BreakerOutcome = Literal["success", "failure", "release"]


@dataclass(frozen=True, slots=True)
class Permit:
    """The answer to "may I call?": ``retry_in_s`` says, when refused, how long until a trial may go."""

    allowed: bool
    state: BreakerState
    retry_in_s: float | None = None


@dataclass(frozen=True, slots=True)
class BreakerSnapshot:
    """A breaker as an admin page or metrics see it. ``opened_at`` is in the breaker's clock (monotonic
    in-process, Unix time with Redis); ``retry_in_s`` is ``None`` while closed."""

    name: str
    state: BreakerState
    failures: int
    opened_at: float | None
    retry_in_s: float | None


class BreakerStore(Protocol):
    """Where breaker state lives; each method is one atomic transition of the breaker called ``name``
    (the state machine is described in ``breaker.py``).

    ``now`` comes from the breaker's clock; ``clock`` is the one a breaker should use by default with this
    store (it must be shared by everyone sharing the store).
    """

    clock: Callable[[], float]

    async def acquire(self, name: str, settings: BreakerSettings, now: float) -> Permit:
        """May a call go through now? Takes a trial slot when half-open."""
        ...

    async def record(self, name: str, outcome: BreakerOutcome, settings: BreakerSettings, now: float) -> BreakerState:
        """Apply a call's outcome; returns the state after it."""
        ...

    async def snapshot(self, name: str, settings: BreakerSettings, now: float) -> BreakerSnapshot: ...

    async def reset(self, name: str) -> None:
        """Back to closed with no failures."""
        ...


def with_route(request: ChatRequest, route: Route | None) -> ChatRequest:
    """``request`` carrying ``route`` (``None``: resolve it again where it is needed). Every call is copied
    once this way: the constructor, in field order, rather than ``dataclasses.replace``'s walk over the
    fields (tests/unit/gateway/test_ports.py checks the order)."""
    r = request
    return ChatRequest(r.messages, r.max_tokens, r.temperature, r.stop, r.model, r.tools, r.tool_choice,
                       r.response_format, r.extra, r.context, r.stream, route, r.guarded)


def carried_route(request: ChatRequest,
                  resolve: Callable[[ChatRequest], Route]) -> tuple[ChatRequest, Route | None]:
    """The request's carried route, else ``resolve(request)`` and the request carrying it; ``None`` when
    the request cannot be routed (unknown or forbidden model: the router answers with that error)."""
    route = request.route
    if route is not None:
        return request, route
    try:
        route = resolve(request)
    except AppError:
        return request, None
    return with_route(request, route), route
