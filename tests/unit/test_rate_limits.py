"""Request rate limits per key, user and organisation: in-process and shared through Redis."""

from __future__ import annotations

import pytest

from atrium.accounts.principal import Principal
from atrium.errors import RateLimited
from atrium.guard.rate_limits import RequestRateLimiter, build_storage
from atrium.settings import RateLimitSettings

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
