"""FakeChatModel's own promises: grounded answers from source [1], word streaming, scripted failures."""

from __future__ import annotations

import pytest

from atrium.gateway.ports import ChatEvent, ChatMessage, ChatRequest, Done, ErrorEvent, Token, Usage
from atrium.gateway.providers.fake import NO_ANSWER, FakeChatModel


def ask(text: str, *, max_tokens: int = 100, stop: tuple[str, ...] = ()) -> ChatRequest:
    return ChatRequest(messages=(ChatMessage("system", "Use the sources."), ChatMessage("user", text)),
                       max_tokens=max_tokens, stop=stop)


async def run(model: FakeChatModel, request: ChatRequest) -> list[ChatEvent]:
    return [event async for event in model.stream(request)]


def text_of(events: list[ChatEvent]) -> str:
    return "".join(event.text for event in events if isinstance(event, Token))


GROUNDED = ("Sources:\n[1] The office opens at 9 am. It closes at 5 pm.\n"
            "[2] Parking is free.\n\nQuestion: When does the office open?")


async def test_answers_with_the_first_sentence_of_source_one() -> None:
    events = await run(FakeChatModel(), ask(GROUNDED))
    assert text_of(events) == "The office opens at 9 am. [1]"
    assert [e.text for e in events if isinstance(e, Token)][:3] == ["The", " office", " opens"]
    assert events[-2] == Usage(prompt_tokens=3 + len(GROUNDED.split()), completion_tokens=7)
    assert events[-1] == Done(model="fake", finish_reason="stop", provider="fake")


async def test_a_source_spanning_lines_is_joined() -> None:
    events = await run(FakeChatModel(), ask("[1] handbook.md\nRefunds take\n14 days. Ask support.\n[2] x"))
    assert text_of(events) == "handbook.md Refunds take 14 days. [1]"


async def test_no_sources_means_i_dont_know() -> None:
    assert text_of(await run(FakeChatModel(), ask("What is the meaning of life?"))) == NO_ANSWER


async def test_max_tokens_and_stop() -> None:
    events = await run(FakeChatModel(), ask(GROUNDED, max_tokens=2))
    assert text_of(events) == "The office"
    assert events[-1] == Done(model="fake", finish_reason="length", provider="fake")
    assert text_of(await run(FakeChatModel(), ask(GROUNDED, stop=(" at",)))) == "The office opens"


@pytest.mark.parametrize(("kwargs", "tokens"), [({"fail_before_first": True}, 0), ({"fail_after_tokens": 3}, 3),
                                                ({"fail_after_tokens": 50}, 7)])
async def test_scripted_failures(kwargs: dict[str, object], tokens: int) -> None:
    model = FakeChatModel(error_code="upstream_error", error_retryable=False, **kwargs)  # type: ignore[arg-type]
    events = await run(model, ask(GROUNDED))
    assert sum(isinstance(e, Token) for e in events) == tokens
    assert not any(isinstance(e, (Done, Usage)) for e in events)
    assert events[-1] == ErrorEvent(code="upstream_error", message=events[-1].message, retryable=False)  # type: ignore[union-attr]


async def test_custom_answer_and_recorded_requests() -> None:
    model = FakeChatModel("scripted", answer=lambda request: "fixed reply")
    request = ask("anything")
    assert text_of(await run(model, request)) == "fixed reply"
    assert model.requests == [request]
