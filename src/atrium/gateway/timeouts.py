"""Deadline wrappers: a model that stays silent, or a stream that runs too long, ends with a typed error.

``FirstEventTimeout`` uses asyncio's own timeout around each step until the first event; ``TotalTimeout``
one timer for the whole stream, which cancels only while it waits for the inner stream. Neither ever
times a ``yield``, so the time the consumer spends between events cannot cancel the wrong code, and both
close the inner stream when they give up. Neither ever ends with a made-up ``Done``: a cut answer ends with
``ErrorEvent(code="model_timeout")``, retryable only when nothing was sent yet.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

from atrium.gateway.fallback import closing_stream, ended_without_final_event
from atrium.gateway.ports import ChatEvent, ChatModel, ChatRequest, Done, ErrorEvent, Token, ToolCallDelta


class FirstEventTimeout:
    """Wrapper: the inner model must produce its first ``Token``, ``ToolCallDelta``, ``Done`` or
    ``ErrorEvent`` within ``seconds`` of the stream starting (``Usage`` or ``Start`` do not stop the clock), else the
    stream ends with a retryable ``model_timeout``. Once it has spoken, this wrapper stays out of the way."""

    def __init__(self, inner: ChatModel, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError("seconds must be positive")
        self.name = inner.name
        self._inner = inner
        self._seconds = seconds

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ChatEvent, None]:
        deadline = asyncio.get_running_loop().time() + self._seconds
        async with closing_stream(self._inner.stream(request)) as events:
            while True:  # under the deadline until the model has said something
                event = await _next_before(events, deadline)
                if isinstance(event, _TimedOut):
                    yield ErrorEvent(
                        code="model_timeout",
                        message=f"Model {self.name!r} sent nothing within {self._seconds:g} s.",
                        retryable=True,
                        model=self.name,
                    )
                    return
                if event is None:
                    yield ended_without_final_event(self.name)
                    return
                yield event
                if isinstance(event, Done | ErrorEvent):
                    return
                if isinstance(event, Token | ToolCallDelta):
                    break
            async for event in events:
                yield event
                if isinstance(event, Done | ErrorEvent):
                    return
            yield ended_without_final_event(self.name)

    async def ready(self) -> bool:
        return await self._inner.ready()

    async def aclose(self) -> None:
        await self._inner.aclose()


class TotalTimeout:
    """Wrapper: the whole stream must end within ``seconds`` of starting. Past the deadline it ends with
    ``ErrorEvent(code="model_timeout")``: retryable if no ``Token``/``ToolCallDelta`` was sent yet (another
    attempt may be faster), not retryable once the caller holds part of an answer."""

    def __init__(self, inner: ChatModel, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError("seconds must be positive")
        self.name = inner.name
        self._inner = inner
        self._seconds = seconds

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ChatEvent, None]:
        # One timer for the whole stream rather than a timeout per event (a stream has hundreds): it
        # cancels this task only while it waits for the inner stream, never while the consumer holds it.
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        deadline = loop.time() + self._seconds
        waiting = fired = False

        def expire() -> None:
            nonlocal fired
            if waiting:
                fired = True
                task.cancel()

        timer = loop.call_at(deadline, expire)
        content_sent = False
        try:
            async with closing_stream(self._inner.stream(request)) as events:
                while True:
                    event: ChatEvent | _TimedOut | None = _TIMED_OUT
                    if loop.time() < deadline:
                        waiting = True
                        try:
                            event = await anext(events, None)
                        except asyncio.CancelledError:
                            if not fired or task.uncancel() > 0:
                                raise
                            event = _TIMED_OUT
                        finally:
                            waiting = False
                        if fired and not isinstance(event, _TimedOut):  # the inner stream swallowed it
                            task.uncancel()
                            event = _TIMED_OUT
                    if isinstance(event, _TimedOut):
                        yield ErrorEvent(
                            code="model_timeout",
                            message=f"Model {self.name!r} did not finish within {self._seconds:g} s.",
                            retryable=not content_sent,
                            model=self.name,
                        )
                        return
                    if event is None:
                        yield ended_without_final_event(self.name)
                        return
                    content_sent = content_sent or isinstance(event, Token | ToolCallDelta)
                    yield event
                    if isinstance(event, Done | ErrorEvent):
                        return
        finally:
            timer.cancel()

    async def ready(self) -> bool:
        return await self._inner.ready()

    async def aclose(self) -> None:
        await self._inner.aclose()


class _TimedOut:
    """Marker returned by :func:`_next_before` when the deadline passed."""


_TIMED_OUT = _TimedOut()


async def _next_before(events: AsyncIterator[ChatEvent], deadline: float) -> ChatEvent | _TimedOut | None:
    """The next event, ``None`` at the end of the stream, or :data:`_TIMED_OUT` once ``deadline`` (loop
    time) has passed. Only this timeout's own expiry is turned into ``_TIMED_OUT``."""
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
