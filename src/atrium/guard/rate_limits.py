"""Rate limits per API key, user and organisation, on the ``limits`` library: requests per minute, model
tokens per minute, and WebSocket messages per minute.

* Requests: ``admit`` hits every scope that applies in turn; the first one over its limit refuses the
  request with ``RateLimited`` (429, ``Retry-After``, ``X-RateLimit-Scope``). Admitted requests get
  ``X-RateLimit-Limit`` / ``-Remaining`` / ``-Reset`` for the tightest scope.
* Tokens: a call's size is unknown before it runs, so ``admit`` only refuses a caller whose window is
  already spent (429, scope ``key_tokens`` / ``user_tokens`` / ``org_tokens``), and the gateway reports
  what each call actually used (prompt + completion) through ``record_tokens`` when it ends. Admitted
  requests get ``X-RateLimit-Limit-Tokens`` / ``-Remaining-Tokens`` / ``-Reset-Tokens``.
* WebSocket messages: ``admit_message``, once per message received (the ``/ws`` endpoint must call it).

A key's own limits (``Principal.key_requests_per_minute`` / ``key_tokens_per_minute``, set on the key)
replace the configured ``key_*`` defaults. Storage is in-process for the embedded default and Redis
(shared by every replica, atomic in Redis) in the scale profile.

When the storage fails (Redis down or unreachable), ``fail_open`` decides: admit without counting (the
default: an outage of the limiter must not become an outage of the API; logged once per outage and
counted in ``atrium_limits_storage_errors_total`` / ``atrium_limits_unchecked_total``) or refuse with 503.
After a failure the storage is left alone for ``storage_retry_s``, so an unreachable Redis costs one
timeout per period, not one per request.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

from cachetools import TTLCache
from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import (
    FixedWindowRateLimiter,
    MovingWindowRateLimiter,
    RateLimiter,
    SlidingWindowCounterRateLimiter,
)
from limits.errors import StorageError
from prometheus_client import CollectorRegistry, Counter

from atrium.accounts.principal import Principal
from atrium.errors import NotReady, RateLimited
from atrium.guard.settings import RateLimitSettings
from atrium.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

T = TypeVar("T")

_STRATEGIES: dict[str, type[RateLimiter]] = {
    "sliding_window": SlidingWindowCounterRateLimiter,
    "moving_window": MovingWindowRateLimiter,
    "fixed_window": FixedWindowRateLimiter,
}
_TOKENS = "TOKENS"  # storage namespace of token windows (request windows use the library's default)
_SCOPES = ("key", "user", "org")


def build_storage(redis_url: str | None, *, timeout_s: float = 0.5) -> Storage:
    """In-process storage, or Redis (errors wrapped in ``limits.errors.StorageError``, every round trip
    bounded by ``timeout_s``)."""
    if redis_url is None:
        return MemoryStorage()
    scheme, _, rest = redis_url.partition("://")
    scheme = {"unix": "redis+unix"}.get(scheme, scheme)
    return RedisStorage(f"async+{scheme}://{rest}", implementation="redispy", key_prefix="atrium:limits",
                        wrap_exceptions=True, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)


class _StorageDown(Exception):
    """The storage failed (or is being left alone after a failure) and ``fail_open`` is on."""


class RequestRateLimiter:
    def __init__(self, settings: RateLimitSettings, storage: Storage, *, metrics: Metrics | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._enabled = settings.enabled
        self._storage = storage
        self._limiter = _STRATEGIES[settings.strategy](storage)
        self._metrics = metrics
        self._clock = clock
        self._items: dict[tuple[str, int], RateLimitItem] = {}
        self._request_defaults = {"key": settings.key_requests_per_minute,
                                  "user": settings.user_requests_per_minute,
                                  "org": settings.org_requests_per_minute}
        self._token_defaults = {"key": settings.key_tokens_per_minute, "user": settings.user_tokens_per_minute,
                                "org": settings.org_tokens_per_minute}
        # The token limit each key was admitted under, so that what its calls used is counted in the same
        # window (keys carry their own limits; the gateway only knows the key's id).
        self._key_token_limits: TTLCache[str, int | None] = TTLCache(maxsize=100_000, ttl=3600)
        self._down_until = 0.0
        self._outage_logged = False
        registry = metrics.registry if metrics is not None else CollectorRegistry()
        self.storage_errors = Counter(
            "atrium_limits_storage_errors", "Failed round trips to the rate-limit storage (Redis).",
            ["operation"], registry=registry)
        self.unchecked = Counter(
            "atrium_limits_unchecked", "Requests, token reports and messages let through unchecked because "
            "the rate-limit storage was unavailable (rate_limits.fail_open).", ["operation"], registry=registry)

    # -- requests ----------------------------------------------------------------------------------------

    async def admit(self, principal: Principal) -> dict[str, str]:
        """Count one request against every scope of ``principal`` and check that none of its token
        windows is spent; raise ``RateLimited`` if a scope is full. Returns the quota headers to send."""
        if not self._enabled:
            return {}
        if principal.api_key_id is not None:
            self._key_token_limits[principal.api_key_id] = self._token_limit("key", principal)
        try:
            # Tokens first: a caller refused for its spent token window is not charged a request.
            headers = await self._guarded("tokens", self._check_tokens(principal))
            headers.update(await self._guarded("requests", self._count_request(principal)))
        except _StorageDown:
            return {}
        return headers

    async def _count_request(self, principal: Principal) -> dict[str, str]:
        tightest: tuple[RateLimitItem, str, str] | None = None
        for scope, ident in _idents(principal.api_key_id, principal.user_id, principal.org_id):
            amount = principal.key_requests_per_minute if scope == "key" else None
            amount = amount or self._request_defaults[scope]
            if amount is None:
                continue
            item = self._item("", amount)
            if not await self._limiter.hit(item, scope, ident):
                stats = await self._limiter.get_window_stats(item, scope, ident)
                retry_after = _seconds_until(stats.reset_time)
                self._refused(scope)
                raise RateLimited(
                    f"Rate limit of {amount} requests per minute per {scope} reached; retry in {retry_after} s.",
                    retry_after=retry_after,
                    headers={"Retry-After": str(retry_after), "X-RateLimit-Limit": str(amount),
                             "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(retry_after),
                             "X-RateLimit-Scope": scope})
            if tightest is None or item.amount < tightest[0].amount:
                tightest = (item, scope, ident)
        if tightest is None:
            return {}
        item, scope, ident = tightest
        stats = await self._limiter.get_window_stats(item, scope, ident)
        return {"X-RateLimit-Limit": str(item.amount), "X-RateLimit-Remaining": str(stats.remaining),
                "X-RateLimit-Reset": str(_seconds_until(stats.reset_time, at_least=0))}

    # -- tokens ------------------------------------------------------------------------------------------

    async def _check_tokens(self, principal: Principal) -> dict[str, str]:
        tightest: tuple[int, int, float] | None = None  # limit, remaining, reset time
        for scope, ident in _idents(principal.api_key_id, principal.user_id, principal.org_id):
            amount = self._token_limit(scope, principal)
            if amount is None:
                continue
            stats = await self._limiter.get_window_stats(self._item(_TOKENS, amount), scope, ident)
            if stats.remaining <= 0:
                retry_after = _seconds_until(stats.reset_time)
                self._refused(f"{scope}_tokens")
                raise RateLimited(
                    f"Rate limit of {amount} tokens per minute per {scope} reached; retry in {retry_after} s.",
                    retry_after=retry_after,
                    headers={"Retry-After": str(retry_after), "X-RateLimit-Limit-Tokens": str(amount),
                             "X-RateLimit-Remaining-Tokens": "0", "X-RateLimit-Reset-Tokens": str(retry_after),
                             "X-RateLimit-Scope": f"{scope}_tokens"})
            if tightest is None or stats.remaining < tightest[1]:
                tightest = (amount, stats.remaining, stats.reset_time)
        if tightest is None:
            return {}
        amount, remaining, reset_time = tightest
        return {"X-RateLimit-Limit-Tokens": str(amount), "X-RateLimit-Remaining-Tokens": str(remaining),
                "X-RateLimit-Reset-Tokens": str(_seconds_until(reset_time, at_least=0))}

    def counts_tokens(self, api_key_id: str | None) -> bool:
        """Whether a call of this key has any token limit to report to (so the gateway skips counting
        tokens when none applies)."""
        if not self._enabled:
            return False
        if any(amount is not None for amount in self._token_defaults.values()):
            return True
        return api_key_id is not None and self._key_token_limits.get(api_key_id) is not None

    async def record_tokens(self, *, org_id: str | None, user_id: str | None, api_key_id: str | None,
                            tokens: int) -> None:
        """Count ``tokens`` (a finished call's prompt + completion) against every token scope. Never
        raises: a storage failure is logged and counted."""
        if not self._enabled or tokens <= 0:
            return
        with contextlib.suppress(_StorageDown, NotReady):
            await self._guarded("record_tokens", self._hit_tokens(org_id, user_id, api_key_id, tokens))

    async def _hit_tokens(self, org_id: str | None, user_id: str | None, api_key_id: str | None,
                          tokens: int) -> None:
        for scope, ident in _idents(api_key_id, user_id, org_id):
            amount = (self._key_token_limits.get(ident, self._token_defaults["key"]) if scope == "key"
                      else self._token_defaults[scope])
            if amount is None:
                continue
            item = self._item(_TOKENS, amount)
            if not await self._limiter.hit(item, scope, ident, cost=tokens):
                # More than the window has left: the strategies that refuse a hit they cannot take whole
                # (sliding and moving windows) would count nothing, so fill the window instead. The next
                # call then waits until it slides.
                stats = await self._limiter.get_window_stats(item, scope, ident)
                if stats.remaining > 0:
                    await self._limiter.hit(item, scope, ident, cost=stats.remaining)

    def _token_limit(self, scope: str, principal: Principal) -> int | None:
        if scope == "key" and principal.key_tokens_per_minute is not None:
            return principal.key_tokens_per_minute
        return self._token_defaults[scope]

    # -- WebSocket messages --------------------------------------------------------------------------------

    async def admit_message(self, principal: Principal) -> None:
        """Count one WebSocket message of ``principal`` (its key, else its user, else its org); raise
        ``RateLimited`` when over ``ws_messages_per_minute``. The ``/ws`` endpoint calls this for every
        message it receives."""
        amount = self._settings.ws_messages_per_minute
        if not self._enabled or amount is None:
            return
        scope, ident = next(iter(_idents(principal.api_key_id, principal.user_id, principal.org_id)))
        item = self._item("WS", amount)

        async def hit() -> None:
            if not await self._limiter.hit(item, "ws", scope, ident):
                stats = await self._limiter.get_window_stats(item, "ws", scope, ident)
                retry_after = _seconds_until(stats.reset_time)
                self._refused("ws")
                raise RateLimited(f"Rate limit of {amount} WebSocket messages per minute reached; retry in "
                                  f"{retry_after} s.", retry_after=retry_after,
                                  headers={"Retry-After": str(retry_after), "X-RateLimit-Scope": "ws"})

        try:
            await self._guarded("ws_messages", hit())
        except _StorageDown:
            return

    # -- storage failures --------------------------------------------------------------------------------

    async def _guarded(self, operation: str, work: Awaitable[T]) -> T:
        """``await work``; when the storage fails or is being left alone: ``_StorageDown`` (fail-open)
        or ``NotReady`` (503, fail-closed)."""
        if self._down_until and self._clock() < self._down_until:
            _close(work)
            return self._unavailable(operation)
        try:
            result = await work
        except (StorageError, ConnectionError, TimeoutError, OSError) as exc:
            self.storage_errors.labels(operation).inc()
            self._down_until = self._clock() + self._settings.storage_retry_s
            if not self._outage_logged:
                self._outage_logged = True
                log.warning("rate-limit storage unavailable (%s); %s until it answers again",
                            type(getattr(exc, "storage_error", exc)).__name__,
                            "admitting requests unchecked" if self._settings.fail_open else "refusing requests")
            return self._unavailable(operation)
        if self._down_until:
            self._down_until = 0.0
            self._outage_logged = False
            log.warning("rate-limit storage available again; limits are enforced")
        return result

    def _unavailable(self, operation: str) -> NoReturn:
        self.unchecked.labels(operation).inc()
        if self._settings.fail_open:
            raise _StorageDown
        raise NotReady("Rate limits cannot be checked right now; retry shortly.", code="limits_unavailable")

    def _refused(self, scope: str) -> None:
        if self._metrics is not None:
            self._metrics.rate_limited.labels(scope).inc()

    def _item(self, namespace: str, amount: int) -> RateLimitItem:
        item = self._items.get((namespace, amount))
        if item is None:
            item = (RateLimitItemPerMinute(amount, namespace=namespace) if namespace
                    else RateLimitItemPerMinute(amount))
            self._items[(namespace, amount)] = item
        return item


def _idents(api_key_id: str | None, user_id: str | None, org_id: str | None) -> list[tuple[str, str]]:
    return [(scope, ident) for scope, ident in zip(_SCOPES, (api_key_id, user_id, org_id), strict=True)
            if ident is not None]


def _seconds_until(moment: float, *, at_least: int = 1) -> int:
    return max(at_least, math.ceil(moment - time.time()))


def _close(work: Awaitable[object]) -> None:
    close = getattr(work, "close", None)
    if close is not None:
        close()  # a coroutine that will not run: close it, so Python does not warn it was never awaited
