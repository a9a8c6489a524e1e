"""Deadline wrappers: a model that stays silent, or a stream that runs too long, ends with a typed error;
and the measure of a model's time to first output (``LatencyObservingChatModel``).

``FirstEventTimeout`` reads to the first output with :func:`atrium.gateway.streams.open_events` under a
deadline (asyncio's own timeout around each step); ``TotalTimeout``
one timer for the whole stream, which cancels only while it waits for the inner stream. Neither ever
times a ``yield``, so the time the consumer spends between events cannot cancel the wrong code, and both
close the inner stream when they give up. Neither ever ends with a made-up ``Done``: a cut answer ends with
``ErrorEvent(code="model_timeout")``, retryable only when nothing was sent yet.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from atrium.gateway.ports import ChatEvent, ChatModel, ChatRequest, Done, ErrorEvent, Token, ToolCallDelta
from atrium.gateway.strategies import LatencyTracker
from atrium.gateway.streams import FINAL, ChatStream, ended_without_final_event, open_events
from atrium.gateway.wrapping import ChatModelWrapper


class _Latency:
    """Where a measured time to first output goes: ``tracker`` under ``key``, timed by ``clock``."""

    __slots__ = ("clock", "key", "tracker")

    def __init__(self, tracker: LatencyTracker, key: str, clock: Callable[[], float]) -> None:
        self.tracker, self.key, self.clock = tracker, key, clock


class FirstEventTimeout(ChatModelWrapper):
    """Wrapper: the inner model must produce its first ``Token``, ``ToolCallDelta``, ``Done`` or
    ``ErrorEvent`` within ``seconds`` of the stream starting (``Usage`` or ``Start`` do not stop the clock), else the
    stream ends with a retryable ``model_timeout``. Once it has spoken, this wrapper stays out of the way.
    With ``latency`` it also does :class:`LatencyObservingChatModel`'s work (one layer instead of two)."""

    def __init__(self, inner: ChatModel, seconds: float, *, latency: _Latency | None = None) -> None:
        if seconds <= 0:
            raise ValueError("seconds must be positive")
        super().__init__(inner)
        self._seconds = seconds
        self._latency = latency
        self._timed_out = ErrorEvent(code="model_timeout", message=f"Model {self.name!r} sent nothing within "
                                     f"{seconds:g} s.", retryable=True, model=self.name)

    def observed(self, latency: _Latency) -> FirstEventTimeout:
        """This timeout over the same model, also measuring its time to first output into ``latency``."""
        return FirstEventTimeout(self._inner, self._seconds, latency=latency)

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ChatEvent, None]:
        latency = self._latency
        started = latency.clock() if latency is not None else 0.0
        deadline = asyncio.get_running_loop().time() + self._seconds
        opening = await open_events(self._inner.stream(request), self.name, deadline=deadline,
                                    timed_out=self._timed_out)
        if opening.events is None:
            assert opening.error is not None
            for event in opening.head:
                yield event
            yield opening.error
            return
        async with ChatStream(opening.events) as events:
            for event in opening.head:
                yield event
            if isinstance(opening.head[-1], Done):
                return
            first = latency.clock() - started if latency is not None else None
            async for event in events:
                if isinstance(event, FINAL):
                    if latency is not None and first is not None and isinstance(event, Done):
                        latency.tracker.observe(latency.key, first)
                    yield event
                    return
                yield event
            yield ended_without_final_event(self.name)


class LatencyObservingChatModel(ChatModelWrapper):
    """Wrapper that measures the time from the start of a stream to its first ``Token``/``ToolCallDelta``
    and reports it to a :class:`LatencyTracker`, for successful streams only (ended by ``Done``): a failed
    attempt says nothing about how fast the model answers. ``key`` is the tracker name (default: the
    inner model's name, which should be its catalogue name). Over a :class:`FirstEventTimeout` (as the
    gateway builds its members), the timeout takes the measure itself: one async layer per event less."""

    def __init__(
        self,
        inner: ChatModel,
        tracker: LatencyTracker,
        *,
        key: str | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        super().__init__(inner)
        self._latency = _Latency(tracker, key or inner.name, clock)
        self._timed = inner.observed(self._latency) if isinstance(inner, FirstEventTimeout) else None

    def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        return self._timed.stream(request) if self._timed is not None else self._observed(request)

    async def _observed(self, request: ChatRequest) -> AsyncGenerator[ChatEvent, None]:
        latency = self._latency
        started = latency.clock()
        first: float | None = None
        async with self._open(request) as events:
            async for event in events:
                if first is None and isinstance(event, Token | ToolCallDelta):
                    first = latency.clock() - started
                elif isinstance(event, Done) and first is not None:
                    latency.tracker.observe(latency.key, first)
                yield event
                if isinstance(event, FINAL):
                    return


class TotalTimeout(ChatModelWrapper):
    """Wrapper: the whole stream must end within ``seconds`` of starting. Past the deadline it ends with
    ``ErrorEvent(code="model_timeout")``: retryable if no ``Token``/``ToolCallDelta`` was sent yet (another
    attempt may be faster), not retryable once the caller holds part of an answer."""

    def __init__(self, inner: ChatModel, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError("seconds must be positive")
        super().__init__(inner)
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
            async with self._open(request) as stream:
                events = aiter(stream)
                while True:
                    timed_out = loop.time() >= deadline
                    event: ChatEvent | None = None
                    if not timed_out:
                        waiting = True
                        try:
                            event = await anext(events, None)
                        except asyncio.CancelledError:
                            if not fired or task.uncancel() > 0:
                                raise
                            timed_out = True
                        finally:
                            waiting = False
                        if fired and not timed_out:  # the inner stream swallowed it
                            task.uncancel()
                            timed_out = True
                    if timed_out:
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
                    if isinstance(event, FINAL):
                        return
        finally:
            timer.cancel()
