"""Circuit breakers: the state machine (over both stores, with a fake clock), and what the model wrapper
counts as a failure, a success, or neither."""

from __future__ import annotations

import asyncio

import pytest

from atrium.gateway.breaker import BreakerChatModel, BreakerRegistry, CircuitBreaker
from atrium.gateway.breaker_stores import InProcessBreakerStore
from atrium.gateway.ports import (
    BreakerOutcome,
    BreakerSnapshot,
    BreakerState,
    BreakerStore,
    ChatEvent,
    Done,
    ErrorEvent,
    Permit,
    Token,
)
from atrium.gateway.providers.fake import FakeChatModel
from atrium.settings import BreakerSettings
from tests.contract import test_breaker_store_contract
from tests.unit.gateway.test_fallback import REQUEST, ScriptedModel, collect, failure

SETTINGS = BreakerSettings(failure_threshold=3, reset_timeout_s=30.0, half_open_max_calls=2)


class FakeClock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


store = test_breaker_store_contract.store  # the fixture: every BreakerStore backend


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def breaker(store: BreakerStore, clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker("acme", SETTINGS, store, clock=clock)


async def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        assert await breaker.allow()
        await breaker.record_failure()


async def test_consecutive_failures_open_it(breaker: CircuitBreaker, clock: FakeClock) -> None:
    await fail(breaker, 2)
    assert (await breaker.snapshot()).state == "closed"
    await breaker.record_success()  # a success in between: the count starts again
    await fail(breaker, 2)
    snapshot = await breaker.snapshot()
    assert (snapshot.state, snapshot.failures, snapshot.retry_in_s) == ("closed", 2, None)
    await fail(breaker, 1)
    assert await breaker.snapshot() == BreakerSnapshot("acme", "open", 3, clock.now, 30.0)
    assert not await breaker.allow()
    assert breaker.state == "open"


async def test_open_refuses_until_the_reset_timeout_then_lets_trials_through(breaker: CircuitBreaker,
                                                                             clock: FakeClock) -> None:
    await fail(breaker, 3)
    clock.now += 29.0
    permit = await breaker.permit()
    assert not permit.allowed and permit.retry_in_s == pytest.approx(1.0)
    clock.now += 1.0
    assert (await breaker.snapshot()).state == "half_open"
    assert await breaker.allow()
    assert await breaker.allow()  # half_open_max_calls = 2
    assert not await breaker.allow()  # and no more while the trials run
    assert breaker.state == "half_open"


async def test_a_trial_success_closes_it(breaker: CircuitBreaker, clock: FakeClock) -> None:
    await fail(breaker, 3)
    clock.now += 30.0
    assert await breaker.allow()
    await breaker.record_success()
    assert await breaker.snapshot() == BreakerSnapshot("acme", "closed", 0, None, None)
    assert all([await breaker.allow() for _ in range(5)])
    await fail(breaker, 2)  # and it counts from zero again
    assert (await breaker.snapshot()).state == "closed"


async def test_a_trial_failure_opens_it_again(breaker: CircuitBreaker, clock: FakeClock) -> None:
    await fail(breaker, 3)
    clock.now += 30.0
    assert await breaker.allow()
    await breaker.record_failure()
    snapshot = await breaker.snapshot()
    assert (snapshot.state, snapshot.opened_at, snapshot.retry_in_s) == ("open", clock.now, 30.0)
    assert not await breaker.allow()
    clock.now += 30.0
    assert await breaker.allow()


async def test_released_trials_free_their_slot_and_lost_ones_expire(breaker: CircuitBreaker,
                                                                    clock: FakeClock) -> None:
    await fail(breaker, 3)
    clock.now += 30.0
    assert await breaker.allow() and await breaker.allow()
    assert not await breaker.allow()
    await breaker.release()
    assert await breaker.allow()
    assert not await breaker.allow()
    clock.now += 30.0  # trials that never reported back do not block the provider for ever
    assert await breaker.allow()


async def test_late_results_of_calls_made_before_it_opened_do_not_count(breaker: CircuitBreaker,
                                                                        clock: FakeClock) -> None:
    await fail(breaker, 3)
    await breaker.record_success()
    await breaker.record_failure()
    snapshot = await breaker.snapshot()
    assert (snapshot.state, snapshot.failures, snapshot.opened_at) == ("open", 3, clock.now)


async def test_reset(breaker: CircuitBreaker) -> None:
    await fail(breaker, 3)
    await breaker.reset()
    assert await breaker.snapshot() == BreakerSnapshot("acme", "closed", 0, None, None)
    assert await breaker.allow()


async def test_breakers_of_different_providers_are_independent(store: BreakerStore, clock: FakeClock) -> None:
    first, second = (CircuitBreaker(name, SETTINGS, store, clock=clock) for name in ("a", "b"))
    await fail(first, 3)
    assert not await first.allow()
    assert await second.allow()


async def test_state_changes_are_reported(store: BreakerStore, clock: FakeClock) -> None:
    registry = BreakerRegistry(SETTINGS, store, clock=clock)
    changes: list[tuple[str, str, str]] = []
    registry.on_change(lambda name, old, new: changes.append((name, old, new)))
    breaker = registry.get("acme")
    assert registry.get("acme") is breaker
    await fail(breaker, 3)
    clock.now += 30.0
    assert await breaker.allow()
    await breaker.record_success()
    assert changes == [("acme", "closed", "open"), ("acme", "open", "half_open"), ("acme", "half_open", "closed")]
    registry.get("other")
    assert [s.name for s in await registry.snapshots()] == ["acme", "other"]


# --- the wrapper -------------------------------------------------------------------------------------------


def wrapper_with(inner: FakeChatModel | ScriptedModel, threshold: int = 1,
                 clock: FakeClock | None = None) -> tuple[BreakerChatModel, CircuitBreaker]:
    breaker = CircuitBreaker("acme-provider", BreakerSettings(failure_threshold=threshold, reset_timeout_s=30.0),
                             InProcessBreakerStore(), clock=clock or FakeClock())
    return BreakerChatModel(inner, breaker), breaker


async def test_an_open_circuit_refuses_without_calling_the_model() -> None:
    inner = FakeChatModel("gpt", fail_before_first=True)
    model, breaker = wrapper_with(inner)
    await collect(model)
    assert breaker.state == "open"
    events = await collect(model)
    assert len(inner.requests) == 1  # the second call never reached it
    assert len(events) == 1
    final = events[0]
    assert isinstance(final, ErrorEvent)
    assert (final.code, final.retryable, final.model, final.provider) == ("circuit_open", False, "gpt",
                                                                         "acme-provider")
    assert "acme-provider" in final.message and "30.0 s" in final.message


async def test_done_is_a_success() -> None:
    model, breaker = wrapper_with(FakeChatModel("gpt"), threshold=2)
    await breaker.record_failure()
    events = await collect(model)
    assert isinstance(events[-1], Done)
    assert (await breaker.snapshot()).failures == 0


@pytest.mark.parametrize("code", ["model_unavailable", "model_timeout", "upstream_error"])
async def test_retryable_errors_are_failures(code: str) -> None:
    model, breaker = wrapper_with(FakeChatModel("gpt", fail_before_first=True, error_code=code))
    await collect(model)
    assert breaker.state == "open"


async def test_a_stream_cut_after_tokens_is_a_failure() -> None:
    model, breaker = wrapper_with(FakeChatModel("gpt", answer=lambda _: "a b c", fail_after_tokens=2))
    events = await collect(model)
    assert isinstance(events[-1], ErrorEvent)
    assert breaker.state == "open"


async def test_rate_limits_and_non_retryable_errors_are_not_failures() -> None:
    for inner in (FakeChatModel("gpt", fail_before_first=True, error_code="rate_limited"),
                  FakeChatModel("gpt", fail_before_first=True, error_code="context_length_exceeded",
                                error_retryable=False)):
        model, breaker = wrapper_with(inner)
        for _ in range(3):
            assert isinstance((await collect(model))[-1], ErrorEvent)
        assert await breaker.snapshot() == BreakerSnapshot("acme-provider", "closed", 0, None, None)


async def test_a_cancelled_stream_is_neither_success_nor_failure() -> None:
    inner = FakeChatModel("gpt", answer=lambda _: " ".join(["word"] * 100), token_delay=0.01)
    model, breaker = wrapper_with(inner, threshold=1)
    received: list[ChatEvent] = []
    started = asyncio.Event()

    async def consume() -> None:
        async for event in model.stream(REQUEST):
            received.append(event)
            started.set()

    task = asyncio.create_task(consume())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await breaker.snapshot() == BreakerSnapshot("acme-provider", "closed", 0, None, None)


async def test_an_abandoned_trial_gives_its_slot_back() -> None:
    inner = ScriptedModel("gpt", [failure()], [Token("a"), Token("b"), Done("gpt")])
    clock = FakeClock()
    model, breaker = wrapper_with(inner, clock=clock)  # one trial call at a time (the default)
    await collect(model)
    clock.now += 30.0
    stream = model.stream(REQUEST)
    assert await anext(stream) == Token("a")  # the trial
    assert not await breaker.allow()  # its slot is taken
    await stream.aclose()
    assert inner.open_streams == 0
    assert await breaker.allow()


async def test_a_store_outage_lets_calls_through() -> None:
    class Broken(InProcessBreakerStore):
        async def acquire(self, name: str, settings: BreakerSettings, now: float) -> Permit:
            raise ConnectionError("store down")

        async def record(self, name: str, outcome: BreakerOutcome, settings: BreakerSettings,
                         now: float) -> BreakerState:
            raise ConnectionError("store down")

    model = BreakerChatModel(FakeChatModel("gpt"), CircuitBreaker("p", SETTINGS, Broken()))
    assert isinstance((await collect(model))[-1], Done)


async def test_a_trial_ending_in_an_error_that_is_not_a_failure_gives_its_slot_back() -> None:
    clock = FakeClock()
    inner = ScriptedModel("gpt", [failure()], [failure("rate_limited")])
    model, breaker = wrapper_with(inner, clock=clock)
    await collect(model)
    clock.now += 30.0
    assert [getattr(e, "code", None) for e in await collect(model)] == ["rate_limited"]  # the trial
    assert breaker.state == "half_open"
    assert await breaker.allow()  # the provider answered, if only "busy": the next trial may go
