"""Retry wrapper: a failed start of a stream is tried again, a started answer never is.

An attempt "starts" with its first ``Token`` or ``ToolCallDelta``. Until then nothing has reached the
caller, so a retryable ``ErrorEvent`` can be hidden and the request sent again (up to
``RetrySettings.attempts`` tries in all). The wait between tries is tenacity's exponential backoff with
jitter, or the upstream's ``retry_after`` when that is longer; a ``retry_after`` above
``max_retry_after_s`` is not waited for at all: the error is returned at once so that a fallback wrapper
can move on to another model. Once an attempt has started, its events pass through unchanged, a later
error included. Events of failed attempts (e.g. an early ``Usage``) are not forwarded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import replace

from tenacity import AsyncRetrying, RetryCallState, retry_if_result, stop_after_attempt, wait_exponential_jitter

from atrium.gateway.ports import ChatEvent, ChatModel, ChatRequest, ErrorEvent
from atrium.gateway.settings import RetrySettings
from atrium.gateway.streams import FINAL, ChatStream, Opening, ended_without_final_event, open_events
from atrium.gateway.wrapping import ChatModelWrapper


class RetryingChatModel(ChatModelWrapper):
    """Wrapper that retries the inner model while its stream fails before any content (see module
    docstring). ``sleep`` is injectable so tests can record the waits instead of waiting."""

    def __init__(
        self,
        inner: ChatModel,
        settings: RetrySettings,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        super().__init__(inner)
        self._settings = settings
        self._sleep = sleep
        self._backoff = wait_exponential_jitter(
            multiplier=settings.initial_delay_s, max=settings.max_delay_s, jitter=settings.jitter_s
        )

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ChatEvent, None]:
        # The first attempt runs without tenacity: most calls succeed, and building a retry controller
        # per call would be the costliest part of this wrapper.
        start = await self._start(request)
        attempts = 1
        if self._settings.attempts > 1 and self._should_retry(start):
            start, attempts = await self._retry(request, start)
        if start.error is not None:
            yield self._final_error(start.error, attempts)
            return
        assert start.events is not None
        async with ChatStream(start.events) as events:
            for event in start.head:
                yield event
            if isinstance(start.head[-1], FINAL):
                return
            async for event in events:
                yield event
                if isinstance(event, FINAL):
                    return
            yield ended_without_final_event(self.name)

    async def _retry(self, request: ChatRequest, first: Opening) -> tuple[Opening, int]:
        """Tenacity drives the attempts from here; attempt 1 (already made by ``stream``) is replayed, so
        the waits are exactly as if tenacity had made it. Returns how the last attempt began and the
        number of attempts."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._settings.attempts),
            wait=self._wait,
            retry=retry_if_result(self._should_retry),
            retry_error_callback=_last_result,  # out of attempts: end with the last error, not RetryError
            sleep=self._sleep,
        )
        pending: list[Opening] = [first]

        async def attempt(request: ChatRequest) -> Opening:
            return pending.pop() if pending else await self._start(request)

        start: Opening = await retrying(attempt, request)
        return start, retrying.statistics.get("attempt_number", 1)

    async def _start(self, request: ChatRequest) -> Opening:
        """One attempt, read up to its first decisive event (content, ``Done`` or ``ErrorEvent``)."""
        return await open_events(self._inner.stream(request), self.name)

    def _should_retry(self, start: Opening) -> bool:
        error = start.error
        if error is None or not error.retryable:
            return False
        return error.retry_after is None or error.retry_after <= self._settings.max_retry_after_s

    def _wait(self, state: RetryCallState) -> float:
        backoff = self._backoff(state)
        assert state.outcome is not None
        error = state.outcome.result().error
        return max(backoff, error.retry_after or 0.0) if error is not None else backoff

    def _final_error(self, error: ErrorEvent, attempts: int) -> ErrorEvent:
        if attempts <= 1:
            return error
        return replace(error, message=f"{error.message} (gave up after {attempts} attempts)")


def _last_result(state: RetryCallState) -> Opening:
    assert state.outcome is not None
    result: Opening = state.outcome.result()
    return result
