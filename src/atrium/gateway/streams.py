"""The mechanics of a model's stream that every layer shares: closing it, and reading it to its first output.

:class:`ChatStream` is a model's stream that closes itself: ``async with ChatStream(events) as events``
closes it on the way out however the block ends (async generators finish their ``finally`` blocks and free
their connections; plain iterators have nothing to close). Iterating it iterates the model's stream itself,
so it costs nothing per event.

:func:`open_events` reads a stream up to its first output, the moment a layer decides how the call
went: the first ``Token`` or ``ToolCallDelta`` (an answer started), ``Done`` (an empty answer) or
``ErrorEvent`` (it failed before any output). The fallback chain, the retries, the first-event timeout and
the compatible APIs' endpoints all start a stream this way.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Generator
from dataclasses import dataclass
from typing import Any

import anyio

from atrium.gateway.ports import ChatEvent, Done, ErrorEvent, Token, ToolCallDelta

FINAL = (Done, ErrorEvent)  # the events that end a stream
OUTPUT = (Token, ToolCallDelta, Done)  # the events that end its opening: an answer began (or was empty)


class ChatStream:
    """A model's stream as an async iterator that is also an async context manager closing it on exit
    (``contextlib.aclosing`` for the port, which promises only an ``AsyncIterator``). A class rather than
    an ``@asynccontextmanager``: every layer of the gateway opens one per call."""

    __slots__ = ("events",)

    def __init__(self, events: AsyncIterator[ChatEvent]) -> None:
        self.events = events

    def __aiter__(self) -> AsyncIterator[ChatEvent]:
        return self.events  # ``async for`` reads the model's stream directly: no layer per event

    def __anext__(self) -> Awaitable[ChatEvent]:
        return self.events.__anext__()

    async def __aenter__(self) -> ChatStream:
        return self

    def __aexit__(self, *_exc: object) -> Awaitable[None]:
        # The stream's own ``aclose()`` awaitable, not a coroutine around it: one frame less per layer.
        aclose = getattr(self.events, "aclose", None)
        return aclose() if aclose is not None else _NOTHING

    def aclose(self) -> Awaitable[None]:
        return self.__aexit__()


class _Nothing:
    """An awaitable that is done at once (what closing a stream without ``aclose`` awaits)."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())  # type: ignore[return-value]  # an empty iterator: the await returns None at once


_NOTHING = _Nothing()


async def aclose_stream(events: AsyncIterator[ChatEvent]) -> None:
    """Close a model's stream if it has ``aclose`` (finishes its ``finally`` blocks, frees connections)."""
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()


def ended_without_final_event(model: str) -> ErrorEvent:
    """The error for a stream that just stopped: the port promises a final event, so it was cut, and cut
    streams are retryable (another attempt may well succeed)."""
    return ErrorEvent(code="upstream_error", message=f"Model {model!r} ended its stream without a final event.",
                      retryable=True, model=model)


@dataclass(slots=True)
class Opening:
    """How a stream began. Started: ``events`` is the still open stream (the caller closes it) and
    ``head`` the events read, ending with the first output. Else the stream is closed and ``error`` says
    why: the ``ErrorEvent`` it ended with, or, when ``cut``, :func:`ended_without_final_event`; ``head``
    then holds the events read before that."""

    head: list[ChatEvent]
    events: AsyncIterator[ChatEvent] | None = None
    error: ErrorEvent | None = None
    cut: bool = False


async def open_events(events: AsyncIterator[ChatEvent], name: str, *, deadline: float | None = None,
                      timed_out: ErrorEvent | None = None) -> Opening:
    """Read ``events`` (the stream of model ``name``) up to its first output; see :class:`Opening`.

    With a ``deadline`` (event loop time), the first output must come before it, else the stream is closed
    and the error is ``timed_out``; only this deadline's own expiry counts as the timeout. The stream is
    closed too when the reading fails or is cancelled (then the exception goes on)."""
    head: list[ChatEvent] = []
    try:
        while True:
            event = await (anext(events, None) if deadline is None else _next_before(events, deadline))
            if isinstance(event, _TimedOut):
                assert timed_out is not None
                await _close(events)
                return Opening(head, error=timed_out)
            if event is None:
                await _close(events)
                return Opening(head, error=ended_without_final_event(name), cut=True)
            if isinstance(event, ErrorEvent):
                await _close(events)
                return Opening(head, error=event)
            head.append(event)
            if isinstance(event, OUTPUT):
                return Opening(head, events=events)
    except BaseException:  # failed or cancelled while waiting: do not leave the stream open
        await _close(events)
        raise


async def _close(events: AsyncIterator[ChatEvent]) -> None:
    """Close a stream that will not be read on, to the end even if the caller is cancelled meanwhile."""
    with anyio.CancelScope(shield=True):
        await aclose_stream(events)


class _TimedOut:
    """Marker returned by :func:`_next_before` when the deadline passed."""


_TIMED_OUT = _TimedOut()


async def _next_before(events: AsyncIterator[ChatEvent], deadline: float) -> ChatEvent | _TimedOut | None:
    """The next event, ``None`` at the end of the stream, or :data:`_TIMED_OUT` once ``deadline`` (loop
    time) has passed."""
    if asyncio.get_running_loop().time() >= deadline:  # an event ready at once would slip past the timeout
        return _TIMED_OUT
    timeout = asyncio.timeout_at(deadline)
    try:
        async with timeout:
            return await anext(events, None)
    except TimeoutError:
        if timeout.expired():
            return _TIMED_OUT
        raise
