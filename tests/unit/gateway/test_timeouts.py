"""Deadlines: a silent model ends with a retryable ``model_timeout``; a stream past its total deadline ends
with ``model_timeout`` too (retryable only before content), never with a made-up ``Done``."""

from __future__ import annotations

import asyncio
import time

import pytest

from atrium.gateway.ports import Done, ErrorEvent, Token, Usage
from atrium.gateway.providers.fake import FakeChatModel
from atrium.gateway.timeouts import FirstEventTimeout, TotalTimeout
from tests.unit.gateway.test_fallback import REQUEST, ScriptedModel, answer, collect, failure, finals, text_of


async def test_first_event_timeout_when_the_model_stays_silent() -> None:
    inner = ScriptedModel("slow", [30.0, *answer("slow", "late")])
    started = time.perf_counter()
    events = await collect(FirstEventTimeout(inner, 0.05))
    assert time.perf_counter() - started < 2.0
    assert len(events) == 1
    final = events[0]
    assert isinstance(final, ErrorEvent)
    assert (final.code, final.retryable, final.model) == ("model_timeout", True, "slow")
    assert inner.open_streams == 0  # the inner stream was cancelled and finished


async def test_usage_alone_does_not_stop_the_first_event_clock() -> None:
    inner = ScriptedModel("slow", [Usage(prompt_tokens=3, completion_tokens=0), 30.0, Token("late"), Done("slow")])
    events = await collect(FirstEventTimeout(inner, 0.05))
    assert events[0] == Usage(prompt_tokens=3, completion_tokens=0)
    assert isinstance(events[-1], ErrorEvent) and events[-1].code == "model_timeout"
    assert finals(events) == [events[-1]]


async def test_after_the_first_token_slow_tokens_are_fine() -> None:
    inner = ScriptedModel("m", [Token("a"), 0.15, Token("b"), 0.15, Usage(1, 2), Done("m")])
    events = await collect(FirstEventTimeout(inner, 0.05))
    assert events == [Token("a"), Token("b"), Usage(1, 2), Done("m")]


async def test_a_quick_error_is_the_first_event_and_passes_through() -> None:
    inner = ScriptedModel("m", [failure("context_length_exceeded", retryable=False)])
    assert await collect(FirstEventTimeout(inner, 0.05)) == [failure("context_length_exceeded", retryable=False)]


async def test_total_timeout_before_content_is_retryable() -> None:
    inner = ScriptedModel("slow", [30.0, *answer("slow", "late")])
    events = await collect(TotalTimeout(inner, 0.05))
    assert len(events) == 1
    final = events[0]
    assert isinstance(final, ErrorEvent)
    assert (final.code, final.retryable, final.model) == ("model_timeout", True, "slow")
    assert inner.open_streams == 0


async def test_total_timeout_after_content_is_not_retryable_and_never_done() -> None:
    inner = FakeChatModel("slow", answer=lambda _: " ".join(["word"] * 50), token_delay=0.05)
    started = time.perf_counter()
    events = await collect(TotalTimeout(inner, 0.3))
    assert time.perf_counter() - started < 2.0
    assert 1 <= len(text_of(events).split()) < 50
    assert finals(events) == [events[-1]]
    final = events[-1]
    assert isinstance(final, ErrorEvent)
    assert (final.code, final.retryable) == ("model_timeout", False)
    assert not any(isinstance(event, Done) for event in events)


async def test_total_timeout_covers_the_whole_stream_where_first_event_timeout_does_not() -> None:
    def slow_answer() -> FakeChatModel:
        return FakeChatModel("m", answer=lambda _: "a b c d e f g h", token_delay=0.05)

    assert isinstance((await collect(FirstEventTimeout(slow_answer(), 0.3)))[-1], Done)
    assert isinstance((await collect(TotalTimeout(slow_answer(), 0.1)))[-1], ErrorEvent)


async def test_streams_within_the_deadlines_pass_unchanged() -> None:
    for wrap in (lambda m: FirstEventTimeout(m, 1.0), lambda m: TotalTimeout(m, 1.0)):
        inner = ScriptedModel("m", answer("m", "one", " two"))
        assert await collect(wrap(inner)) == answer("m", "one", " two")


async def test_a_stream_cut_without_a_final_event_ends_with_an_error() -> None:
    for wrap in (lambda m: FirstEventTimeout(m, 1.0), lambda m: TotalTimeout(m, 1.0)):
        events = await collect(wrap(ScriptedModel("m", [Token("half")])))
        assert events[0] == Token("half")
        assert isinstance(events[-1], ErrorEvent) and len(events) == 2


async def test_the_inner_stream_is_closed_when_the_consumer_leaves() -> None:
    for wrap in (lambda m: FirstEventTimeout(m, 1.0), lambda m: TotalTimeout(m, 1.0)):
        inner = ScriptedModel("m", answer("m", "one", " two"))
        stream = wrap(inner).stream(REQUEST)
        assert await anext(stream) == Token("one")
        await stream.aclose()
        assert (inner.closed_early, inner.open_streams) == (1, 0)


async def test_the_time_the_consumer_takes_between_events_counts_for_the_total_only() -> None:
    for wrap, cut in ((lambda m: FirstEventTimeout(m, 0.05), False), (lambda m: TotalTimeout(m, 0.05), True)):
        stream = wrap(ScriptedModel("m", answer("m", "one", " two"))).stream(REQUEST)
        assert await anext(stream) == Token("one")
        await asyncio.sleep(0.1)  # a slow consumer
        rest = [event async for event in stream]
        assert isinstance(rest[-1], ErrorEvent) is cut


def test_seconds_must_be_positive() -> None:
    for wrapper in (FirstEventTimeout, TotalTimeout):
        with pytest.raises(ValueError):
            wrapper(FakeChatModel(), 0)
