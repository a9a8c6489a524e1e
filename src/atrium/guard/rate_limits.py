"""Request rate limits per API key, user and organisation, on the ``limits`` library.

Every scope that applies is hit in turn; the first one over its limit refuses the request with
``RateLimited`` (429, ``Retry-After``). Admitted requests get ``X-RateLimit-Limit`` /
``X-RateLimit-Remaining`` / ``X-RateLimit-Reset`` for the tightest scope. Storage is in-process for the
embedded default and Redis (shared by every replica, atomic in Redis) in the scale profile.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)

from atrium.accounts.principal import Principal
from atrium.errors import RateLimited
from atrium.settings import RateLimitSettings

_STRATEGIES: dict[str, type[RateLimiter]] = {
    "sliding_window": SlidingWindowCounterRateLimiter,
    "moving_window": MovingWindowRateLimiter,
    "fixed_window": FixedWindowRateLimiter,
}


def build_storage(redis_url: str | None) -> Storage:
    if redis_url is None:
        return MemoryStorage()
    scheme, _, rest = redis_url.partition("://")
    scheme = {"unix": "redis+unix"}.get(scheme, scheme)
    return RedisStorage(f"async+{scheme}://{rest}", implementation="redispy", key_prefix="atrium:limits")


class RequestRateLimiter:
    def __init__(self, settings: RateLimitSettings, storage: Storage) -> None:
        self._enabled = settings.enabled
        self._storage = storage
        self._limiter = _STRATEGIES[settings.strategy](storage)
        self._scopes: list[tuple[str, RateLimitItem]] = [
            (scope, RateLimitItemPerMinute(amount))
            for scope, amount in (("key", settings.key_requests_per_minute),
                                  ("user", settings.user_requests_per_minute),
                                  ("org", settings.org_requests_per_minute))
            if amount is not None
        ]

    async def admit(self, principal: Principal) -> dict[str, str]:
        """Count one request against every scope of ``principal``; raise ``RateLimited`` if one is full.
        Returns the rate-limit headers to send with the response."""
        if not self._enabled:
            return {}
        ids = {"key": principal.api_key_id, "user": principal.user_id, "org": principal.org_id}
        tightest: tuple[RateLimitItem, str, str] | None = None
        for scope, item in self._scopes:
            ident = ids[scope]
            if ident is None:
                continue
            if not await self._limiter.hit(item, scope, ident):
                stats = await self._limiter.get_window_stats(item, scope, ident)
                retry_after = max(1, math.ceil(stats.reset_time - time.time()))
                raise RateLimited(
                    f"Rate limit of {item.amount} requests per minute per {scope} reached; retry in "
                    f"{retry_after} s.", retry_after=retry_after,
                    headers={"Retry-After": str(retry_after), "X-RateLimit-Limit": str(item.amount),
                             "X-RateLimit-Remaining": "0", "X-RateLimit-Scope": scope})
            if tightest is None or item.amount < tightest[0].amount:
                tightest = (item, scope, ident)
        if tightest is None:
            return {}
        item, scope, ident = tightest
        stats = await self._limiter.get_window_stats(item, scope, ident)
        return {"X-RateLimit-Limit": str(item.amount), "X-RateLimit-Remaining": str(stats.remaining),
                "X-RateLimit-Reset": str(max(0, math.ceil(stats.reset_time - time.time())))}

