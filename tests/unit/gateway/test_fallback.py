"""Fallback across models: the first that starts an answer serves it; errors before content move on,
errors after it end the stream; abandoned streams are closed.

The scripted model defined here is shared by the other wrapper tests of this folder."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Sequence
from typing import Any

import pytest

from atrium.gateway.fallback import stream_with_fallback
from atrium.gateway.ports import (
    ChatEvent,
    ChatMessage,
    ChatModel,
    ChatRequest,
    Done,
    ErrorEvent,
    Start,
    Token,
    Usage,
)
from atrium.gateway.providers.fake import FakeChatModel

REQUEST = ChatRequest(messages=(ChatMessage("user", "Hello?"),))

Step = ChatEvent | float  # a number means "sleep this many seconds"


def answer(name: str, *words: str) -> list[Step]:
    """A successful script: one token per word, then usage, then ``Done``."""
    return [*(Token(w) for w in words), Usage(prompt_tokens=1, completion_tokens=len(words)),
            Done(model=name, provider="scripted")]


def failure(code: str = "model_unavailable", *, retryable: bool = True,
            retry_after: float | None = None) -> ErrorEvent:
    return ErrorEvent(code=code, message=f"Scripted {code}.", retryable=retryable, retry_after=retry_after)


class ScriptedModel:
    """A ChatModel playing ``scripts[i]`` on its i-th call (the last one again once they run out).

    ``calls`` counts streams started; ``finished`` counts streams whose generator ended (ran out, closed or
    cancelled); ``closed_early`` counts those closed by ``aclose()`` before the end of their script.
    """

    def __init__(self, name: str, *scripts: Sequence[Step]) -> None:
        assert scripts, "a ScriptedModel needs at least one script"
        self.name = name
        self.calls = 0
        self.finished = 0
        self.closed_early = 0
        self._scripts = scripts
        self._ready = True

    async def stream(self, request: ChatRequest) -> AsyncGenerator[ChatEvent, None]:
        script = self._scripts[min(self.calls, len(self._scripts) - 1)]
        self.calls += 1
        try:
            for step in script:
                if isinstance(step, float | int):
                    await asyncio.sleep(step)
                else:
                    yield step
        except GeneratorExit:
            self.closed_early += 1
            raise
        finally:
            self.finished += 1

    @property
    def open_streams(self) -> int:
        return self.calls - self.finished

    async def ready(self) -> bool:
        return self._ready

    async def aclose(self) -> None:
        self._ready = False


async def collect(model: ChatModel, request: ChatRequest = REQUEST) -> list[ChatEvent]:
    return [event async for event in model.stream(request)]


async def collect_fallback(candidates: Sequence[ChatModel], **options: Any) -> list[ChatEvent]:
    return [event async for event in stream_with_fallback(candidates, REQUEST, **options)]


def text_of(events: Sequence[ChatEvent]) -> str:
    return "".join(event.text for event in events if isinstance(event, Token))


def finals(events: Sequence[ChatEvent]) -> list[ChatEvent]:
    """The ``Done``/``ErrorEvent`` events of a stream (exactly one, last, when the port is kept)."""
    return [event for event in events if isinstance(event, Done | ErrorEvent)]


# --- the rules ---------------------------------------------------------------------------------------------


async def test_an_error_before_content_moves_on_silently() -> None:
    first = ScriptedModel("a", [failure()])
    second = ScriptedModel("b", answer("b", "Hi", " there"))
    events = await collect_fallback([first, second])
    assert events == answer("b", "Hi", " there")
    assert (first.calls, second.calls) == (1, 1)


async def test_the_first_candidate_that_works_serves_and_the_rest_are_not_called() -> None:
    first, second = FakeChatModel("a", answer=lambda _: "one two"), FakeChatModel("b")
    events = await collect_fallback([first, second])
    assert text_of(events) == "one two"
    assert events[-1] == Done(model="a", provider="fake")
    assert second.requests == []


async def test_usage_and_start_of_failed_attempts_are_not_forwarded() -> None:
    first = ScriptedModel("a", [Start("a", "pa"), Usage(prompt_tokens=50, completion_tokens=0), failure()])
    second = ScriptedModel("b", [Start("b", "pb"), Usage(prompt_tokens=7, completion_tokens=0), Token("x"),
                                 Done(model="b")])
    events = await collect_fallback([first, second])
    assert events == [Start("b", "pb"), Usage(prompt_tokens=7, completion_tokens=0), Token("x"), Done(model="b")]


async def test_an_error_after_the_first_token_ends_the_stream_without_switching() -> None:
    first = FakeChatModel("a", answer=lambda _: "one two three", fail_after_tokens=2)
    second = FakeChatModel("b")
    events = await collect_fallback([first, second])
    assert text_of(events) == "one two"
    assert finals(events) == [events[-1]]
    final = events[-1]
    assert isinstance(final, ErrorEvent)
    assert (final.code, final.retryable, final.model) == ("model_unavailable", True, "a")
    assert second.requests == []  # never switched mid-answer
    assert not any(isinstance(event, Done) for event in events)  # and never a made-up Done


async def test_a_cut_stream_after_content_ends_with_an_error_not_done() -> None:
    first = ScriptedModel("a", [Token("half")])  # stops without a final event
    second = ScriptedModel("b", answer("b", "whole"))
    events = await collect_fallback([first, second])
    assert events[0] == Token("half")
    assert isinstance(events[-1], ErrorEvent) and events[-1].model == "a"
    assert second.calls == 0


async def test_when_every_candidate_fails_the_last_error_names_how_many_were_tried() -> None:
    models = [ScriptedModel("a", [failure("model_timeout")]), ScriptedModel("b", [failure("upstream_error")]),
              ScriptedModel("c", [failure("rate_limited", retry_after=3.0)])]
    events = await collect_fallback(models)
    assert len(events) == 1
    final = events[0]
    assert isinstance(final, ErrorEvent)
    assert (final.code, final.retry_after, final.model) == ("rate_limited", 3.0, "c")
    assert "3 models tried" in final.message and "Scripted rate_limited." in final.message
    assert [m.calls for m in models] == [1, 1, 1]


async def test_a_failed_candidate_stream_is_closed_at_once() -> None:
    first = ScriptedModel("a", [failure(), Token("never sent")])
    second = ScriptedModel("b", answer("b", "ok"))
    stream = stream_with_fallback([first, second], REQUEST)
    assert await anext(stream) == Token("ok")
    assert (first.closed_early, first.open_streams) == (1, 0)  # closed before the next model was asked
    await stream.aclose()


async def test_a_consumer_leaving_mid_answer_closes_the_serving_stream() -> None:
    first = ScriptedModel("a", answer("a", "one", " two", " three"))
    stream = stream_with_fallback([first], REQUEST)
    assert await anext(stream) == Token("one")
    await stream.aclose()
    assert (first.closed_early, first.open_streams) == (1, 0)


async def test_cancellation_closes_the_serving_stream() -> None:
    first = ScriptedModel("a", [Token("one"), 10.0, Done(model="a")])
    received: list[ChatEvent] = []
    started = asyncio.Event()

    async def consume() -> None:
        async for event in stream_with_fallback([first], REQUEST):
            received.append(event)
            started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert first.open_streams == 0


async def test_per_request_candidate_order() -> None:
    a, b = FakeChatModel("a", answer=lambda _: "from a"), FakeChatModel("b", answer=lambda _: "from b")
    assert text_of([e async for e in stream_with_fallback([b, a], REQUEST)]) == "from b"
    assert text_of([e async for e in stream_with_fallback([a, b], REQUEST)]) == "from a"


async def test_the_serving_model_is_named_on_its_final_event() -> None:
    unnamed = ScriptedModel("b", [Token("x"), Done(model="")])
    events = await collect_fallback([ScriptedModel("a", [failure()]), unnamed])
    assert events[-1] == Done(model="b")


async def test_an_empty_answer_is_an_answer() -> None:
    second = ScriptedModel("b", answer("b"))
    events = await collect_fallback([ScriptedModel("a", [Usage(1, 0), Done(model="a")]), second])
    assert events == [Usage(1, 0), Done(model="a")]
    assert second.calls == 0


async def test_errors_the_predicate_rejects_end_the_stream_at_once() -> None:
    second = ScriptedModel("b", answer("b", "ok"))
    events = await collect_fallback([ScriptedModel("a", [failure("context_length_exceeded", retryable=False)]),
                                     second], fallback_on=lambda error: error.code != "context_length_exceeded")
    assert [type(e) for e in events] == [ErrorEvent]
    assert second.calls == 0


async def test_no_candidates() -> None:
    events = [e async for e in stream_with_fallback([], REQUEST)]
    assert len(events) == 1 and isinstance(events[0], ErrorEvent)


async def test_starts_announce_and_name_the_serving_candidate() -> None:
    first = ScriptedModel("a", [Usage(prompt_tokens=1, completion_tokens=0), failure()])
    second = ScriptedModel("b", [Usage(prompt_tokens=1, completion_tokens=0), Token("Hi"),
                                 Done(model="", provider="scripted")])
    starts = [Start(model="cat-a", provider="pa"), Start(model="cat-b", provider="pb")]
    events = await collect_fallback([first, second], starts=starts)
    assert events == [Start(model="cat-b", provider="pb"), Usage(prompt_tokens=1, completion_tokens=0),
                      Token("Hi"), Done(model="cat-b", provider="scripted")]
    failed = await collect_fallback([first, ScriptedModel("b", [failure()])], starts=starts)
    assert failed[0].type == "error" and "('cat-a', 'cat-b')" in failed[0].message
    assert failed[0].model == "cat-b" and first.open_streams == 0
