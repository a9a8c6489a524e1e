"""Reading a stream to its first output (``open_events``), the one place every layer starts a stream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from atrium.gateway.ports import ChatEvent, Done, ErrorEvent, Start, Token, Usage
from atrium.gateway.streams import ChatStream, ended_without_final_event, open_events

TIMED_OUT = ErrorEvent(code="model_timeout", message="silent", retryable=True)


class Script:
    """An async generator over ``steps`` (a number: sleep that long) that records whether it was closed."""

    def __init__(self, *steps: ChatEvent | float) -> None:
        self.steps = steps
        self.closed = False

    async def events(self) -> AsyncGenerator[ChatEvent, None]:
        try:
            for step in self.steps:
                if isinstance(step, float):
                    await asyncio.sleep(step)
                else:
                    yield step
        finally:
            self.closed = True


async def test_started_keeps_what_came_before_the_first_output_and_the_stream_open() -> None:
    script = Script(Start(model="m"), Usage(1, 0), Token("a"), Token("b"), Done(model="m"))
    opening = await open_events(script.events(), "m")
    assert opening.head == [Start(model="m"), Usage(1, 0), Token("a")] and opening.error is None
    assert opening.events is not None and not script.closed
    async with ChatStream(opening.events) as events:
        assert [event async for event in events] == [Token("b"), Done(model="m")]
    assert script.closed


async def test_an_error_before_output_closes_the_stream() -> None:
    error = ErrorEvent(code="model_unavailable", message="down", retryable=True)
    script = Script(Usage(1, 0), error, Token("never"))
    opening = await open_events(script.events(), "m")
    assert (opening.head, opening.error, opening.events, opening.cut) == ([Usage(1, 0)], error, None, False)
    assert script.closed


async def test_a_stream_that_stops_before_output_was_cut() -> None:
    opening = await open_events(Script(Usage(1, 0)).events(), "m")
    assert opening.cut and opening.error == ended_without_final_event("m") and opening.events is None


async def test_the_deadline_counts_until_the_first_output_only() -> None:
    script = Script(Usage(1, 0), 0.5, Token("late"))
    loop = asyncio.get_running_loop()
    opening = await open_events(script.events(), "m", deadline=loop.time() + 0.05, timed_out=TIMED_OUT)
    assert (opening.head, opening.error) == ([Usage(1, 0)], TIMED_OUT) and script.closed
    quick = await open_events(Script(Token("a"), 0.2, Done(model="m")).events(), "m",
                              deadline=loop.time() + 0.05, timed_out=TIMED_OUT)
    assert quick.head == [Token("a")] and quick.events is not None
    async with ChatStream(quick.events) as events:
        assert [event async for event in events] == [Done(model="m")]  # past the deadline, not timed


async def test_cancelled_while_opening_closes_the_stream() -> None:
    script = Script(1.0, Token("late"))
    task = asyncio.create_task(open_events(script.events(), "m"))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert script.closed
