"""The base of the gateway's wrappers: a ChatModel in front of another one.

A wrapper (retries, breaker, timeouts, cache, metering...) implements the ChatModel port over an inner
model: it answers to the inner model's name unless told otherwise, is ready when the inner model is, and
closes it with itself. A subclass writes only ``stream``, opening the inner model's stream with
:meth:`ChatModelWrapper._open`, which closes it on leaving the ``async with`` block.
"""

from __future__ import annotations

from atrium.gateway.ports import ChatModel, ChatRequest
from atrium.gateway.streams import ChatStream


class ChatModelWrapper:
    """Holds ``_inner`` and ``name``; delegates ``ready`` and ``aclose``. Subclasses implement ``stream``."""

    def __init__(self, inner: ChatModel, *, name: str | None = None) -> None:
        self.name = inner.name if name is None else name
        self._inner = inner

    async def ready(self) -> bool:
        return await self._inner.ready()

    async def aclose(self) -> None:
        await self._inner.aclose()

    def _open(self, request: ChatRequest) -> ChatStream:
        """The inner model's stream for ``request``, as a :class:`ChatStream` (``async with`` it)."""
        return ChatStream(self._inner.stream(request))
