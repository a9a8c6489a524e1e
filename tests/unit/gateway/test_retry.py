"""Retries: only a retryable failure before any content is tried again, with tenacity's backoff or the
upstream's Retry-After, at most ``attempts`` times; a Retry-After too long to wait ends the stream at once."""

from __future__ import annotations

from atrium.gateway.ports import ErrorEvent, Token, Usage
from atrium.gateway.providers.fake import FakeChatModel
from atrium.gateway.retry import RetryingChatModel
from atrium.settings import RetrySettings
from tests.unit.gateway.test_fallback import REQUEST, ScriptedModel, answer, collect, failure, text_of


class Sleeps:
    """An injected ``sleep`` that records what it was asked to wait instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def settings(**values: float) -> RetrySettings:
    base = {"attempts": 3, "initial_delay_s": 0.2, "max_delay_s": 5.0, "jitter_s": 0.0, "max_retry_after_s": 10.0}
    return RetrySettings(**{**base, **values})


async def test_retries_a_retryable_failure_before_content_until_it_works() -> None:
    model = ScriptedModel("m", [failure()], [failure("model_timeout")], answer("m", "ok"))
    sleeps = Sleeps()
    events = await collect(RetryingChatModel(model, settings(attempts=3), sleep=sleeps))
    assert events == answer("m", "ok")
    assert model.calls == 3
    assert sleeps.waits == [0.2, 0.4]  # exponential, in order, between the attempts only


async def test_gives_up_after_the_configured_attempts_with_the_last_error() -> None:
    model = ScriptedModel("m", [failure("model_unavailable")], [failure("upstream_error")],
                          [failure("model_timeout")], answer("m", "too late"))
    sleeps = Sleeps()
    events = await collect(RetryingChatModel(model, settings(attempts=3), sleep=sleeps))
    assert model.calls == 3
    assert len(sleeps.waits) == 2
    assert len(events) == 1
    final = events[0]
    assert isinstance(final, ErrorEvent)
    assert (final.code, final.retryable) == ("model_timeout", True)
    assert "3 attempts" in final.message


async def test_one_attempt_means_no_retry() -> None:
    model = ScriptedModel("m", [failure()], answer("m", "ok"))
    events = await collect(RetryingChatModel(model, settings(attempts=1), sleep=Sleeps()))
    assert events == [failure()]
    assert model.calls == 1


async def test_backoff_grows_exponentially_with_bounded_jitter_and_a_cap() -> None:
    seen: list[list[float]] = []
    for _ in range(40):
        sleeps = Sleeps()
        model = ScriptedModel("m", [failure()])
        await collect(RetryingChatModel(model, settings(attempts=5, initial_delay_s=0.1, max_delay_s=0.5,
                                                        jitter_s=0.05), sleep=sleeps))
        assert model.calls == 5
        first, second, third, fourth = sleeps.waits
        assert 0.1 <= first <= 0.15
        assert 0.2 <= second <= 0.25
        assert 0.4 <= third <= 0.45
        assert fourth == 0.5  # 0.8 + jitter, capped
        seen.append(sleeps.waits)
    assert len({waits[0] for waits in seen}) > 10  # the jitter is really random


async def test_retry_after_is_honoured_when_longer_than_the_backoff() -> None:
    model = ScriptedModel("m", [failure("rate_limited", retry_after=2.5)], [failure("rate_limited", retry_after=0.01)],
                          answer("m", "ok"))
    sleeps = Sleeps()
    events = await collect(RetryingChatModel(model, settings(initial_delay_s=0.3), sleep=sleeps))
    assert text_of(events) == "ok"
    assert sleeps.waits == [2.5, 0.6]  # max(backoff, retry_after) each time


async def test_a_retry_after_beyond_the_limit_ends_with_the_error_at_once() -> None:
    error = failure("rate_limited", retry_after=60.0)
    model = ScriptedModel("m", [error], answer("m", "ok"))
    sleeps = Sleeps()
    events = await collect(RetryingChatModel(model, settings(max_retry_after_s=10.0), sleep=sleeps))
    assert events == [error]  # unchanged: still retryable, so a fallback moves on to another model
    assert model.calls == 1
    assert sleeps.waits == []


async def test_non_retryable_errors_pass_through_at_once() -> None:
    model = FakeChatModel("m", fail_before_first=True, error_code="context_length_exceeded", error_retryable=False)
    sleeps = Sleeps()
    events = await collect(RetryingChatModel(model, settings(), sleep=sleeps))
    assert [(e.code, e.retryable) for e in events if isinstance(e, ErrorEvent)] == [("context_length_exceeded", False)]
    assert len(events) == 1
    assert len(model.requests) == 1
    assert sleeps.waits == []


async def test_no_retry_once_a_token_was_sent() -> None:
    model = FakeChatModel("m", answer=lambda _: "one two three", fail_after_tokens=2)
    sleeps = Sleeps()
    events = await collect(RetryingChatModel(model, settings(), sleep=sleeps))
    assert text_of(events) == "one two"
    final = events[-1]
    assert isinstance(final, ErrorEvent)
    assert final == ErrorEvent(code="model_unavailable", message="Scripted failure of 'm' after 2 token(s).",
                               retryable=True)  # passed through unchanged
    assert len(model.requests) == 1
    assert sleeps.waits == []


async def test_events_of_failed_attempts_are_not_forwarded() -> None:
    model = ScriptedModel("m", [Usage(prompt_tokens=99, completion_tokens=0), failure()], answer("m", "ok"))
    events = await collect(RetryingChatModel(model, settings(), sleep=Sleeps()))
    assert events == answer("m", "ok")


async def test_failed_attempts_are_closed_and_so_is_an_abandoned_answer() -> None:
    model = ScriptedModel("m", [failure(), Token("never sent")], answer("m", "one", " two"))
    stream = RetryingChatModel(model, settings(), sleep=Sleeps()).stream(REQUEST)
    assert await anext(stream) == Token("one")
    assert model.closed_early == 1  # the failed attempt, closed before the retry
    await stream.aclose()
    assert model.closed_early == 2
    assert model.open_streams == 0


async def test_a_stream_cut_before_content_is_retried() -> None:
    model = ScriptedModel("m", [], answer("m", "ok"))
    events = await collect(RetryingChatModel(model, settings(), sleep=Sleeps()))
    assert text_of(events) == "ok"
    assert model.calls == 2


async def test_wraps_transparently() -> None:
    inner = FakeChatModel("inner")
    model = RetryingChatModel(inner, settings())
    assert model.name == "inner"
    assert await model.ready()
    await model.aclose()
    assert not await inner.ready()
