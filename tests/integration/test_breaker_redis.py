"""Replicas share their circuit breakers through Redis: two breakers on two separate clients (as on two
replicas) see one state, including the half-open trial limit, and every transition is atomic."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from atrium.gateway.breaker import BreakerChatModel, BreakerRegistry, CircuitBreaker
from atrium.gateway.breaker_stores import RedisBreakerStore
from atrium.gateway.providers.fake import FakeChatModel
from atrium.settings import BreakerSettings
from tests.unit.gateway.test_breaker import FakeClock
from tests.unit.gateway.test_fallback import collect

pytestmark = pytest.mark.integration

SETTINGS = BreakerSettings(failure_threshold=2, reset_timeout_s=10.0, half_open_max_calls=1)


@pytest.fixture
async def two_clients(redis_url: str) -> AsyncIterator[tuple[Redis, Redis]]:
    first, second = Redis.from_url(redis_url), Redis.from_url(redis_url)
    try:
        yield first, second
    finally:
        await first.aclose()
        await second.aclose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def replicas(two_clients: tuple[Redis, Redis], clock: FakeClock) -> tuple[CircuitBreaker, CircuitBreaker]:
    return (CircuitBreaker("openai", SETTINGS, RedisBreakerStore(two_clients[0]), clock=clock),
            CircuitBreaker("openai", SETTINGS, RedisBreakerStore(two_clients[1]), clock=clock))


async def test_a_circuit_opened_on_one_replica_refuses_calls_on_the_other(
        replicas: tuple[CircuitBreaker, CircuitBreaker]) -> None:
    a, b = replicas
    await a.record_failure()
    await b.record_failure()  # consecutive failures add up across replicas
    assert (await a.snapshot()).state == "open"
    assert not await b.allow()
    inner = FakeChatModel("gpt")
    events = await collect(BreakerChatModel(inner, b))
    assert [getattr(e, "code", None) for e in events] == ["circuit_open"]
    assert inner.requests == []


async def test_the_half_open_trial_limit_holds_across_replicas(replicas: tuple[CircuitBreaker, CircuitBreaker],
                                                               clock: FakeClock) -> None:
    a, b = replicas
    await a.record_failure()
    await a.record_failure()
    clock.now += 10.0
    assert await a.allow()  # the one trial
    assert not await b.allow()
    assert not await a.allow()
    permit = await b.permit()
    assert (permit.allowed, permit.state) == (False, "half_open")
    await a.record_success()  # the trial went well
    assert await b.allow()
    assert (await b.snapshot()).state == "closed"


async def test_a_trial_failure_on_one_replica_reopens_it_for_both(replicas: tuple[CircuitBreaker, CircuitBreaker],
                                                                  clock: FakeClock) -> None:
    a, b = replicas
    await a.record_failure()
    await a.record_failure()
    clock.now += 10.0
    assert await b.allow()
    await b.record_failure()
    assert not await a.allow()
    assert (await a.snapshot()).opened_at == clock.now


async def test_concurrent_calls_from_both_replicas_get_exactly_the_allowed_trials(
        two_clients: tuple[Redis, Redis], clock: FakeClock) -> None:
    settings = BreakerSettings(failure_threshold=1, reset_timeout_s=10.0, half_open_max_calls=3)
    a, b = (CircuitBreaker("groq", settings, RedisBreakerStore(client), clock=clock) for client in two_clients)
    await a.record_failure()
    clock.now += 10.0
    permits = await asyncio.gather(*(breaker.allow() for _ in range(20) for breaker in (a, b)))
    assert permits.count(True) == 3


async def test_the_redis_store_keeps_wall_clock_time_by_default(two_clients: tuple[Redis, Redis]) -> None:
    registry = BreakerRegistry(SETTINGS, RedisBreakerStore(two_clients[0], prefix="test:breaker:"))
    breaker = registry.get("anthropic")
    await breaker.record_failure()
    await breaker.record_failure()
    snapshot = (await registry.snapshots())[0]
    assert snapshot.state == "open"
    assert snapshot.opened_at is not None and abs(snapshot.opened_at - time.time()) < 5
    assert await two_clients[1].exists("test:breaker:anthropic")
    await breaker.reset()
    assert not await two_clients[1].exists("test:breaker:anthropic")
