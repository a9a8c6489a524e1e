"""What both adapters share: retrying a throttled or unavailable send (tenacity's exponential backoff with
jitter, or the service's ``Retry-After`` when longer), reading ``Retry-After``, and refusing device
endpoints that would reach inside the network (SSRF, through the egress guard ``atrium.guard.egress``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit

from tenacity import AsyncRetrying, RetryCallState, retry_if_result, stop_after_attempt, wait_exponential_jitter

from atrium.errors import InvalidRequest
from atrium.guard.egress import EgressGuard, FetchFailed, InvalidUrl, UrlNotAllowed
from atrium.guard.egress_transport import guarded_client
from atrium.notifications.ports import Outcome


def retry_after_s(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class Retrier:
    """Runs an attempt until it is not ``retryable``, up to ``attempts`` tries. A ``Retry-After`` above
    ``max_retry_after_s`` ends the tries at once (the outcome keeps it for the caller)."""

    def __init__(self, attempts: int, *, initial_s: float, max_retry_after_s: float,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.attempts = attempts
        self.max_retry_after_s = max_retry_after_s
        self._sleep = sleep
        self._backoff = wait_exponential_jitter(multiplier=initial_s, max=max(initial_s, 8.0), jitter=initial_s)

    def _should_retry(self, outcome: Outcome) -> bool:
        if not outcome.retryable:
            return False
        return outcome.retry_after_s is None or outcome.retry_after_s <= self.max_retry_after_s

    def _wait(self, state: RetryCallState) -> float:
        backoff = self._backoff(state)
        outcome = state.outcome.result() if state.outcome is not None and not state.outcome.failed else None
        told = outcome.retry_after_s if isinstance(outcome, Outcome) else None
        return max(backoff, told or 0.0)

    async def run(self, attempt: Callable[[], Awaitable[Outcome]]) -> Outcome:
        retrying = AsyncRetrying(stop=stop_after_attempt(self.attempts), wait=self._wait,
                                 retry=retry_if_result(self._should_retry),
                                 retry_error_callback=lambda state: state.outcome.result(),  # type: ignore[union-attr]
                                 sleep=self._sleep)
        tries = 0

        async def counted() -> Outcome:
            nonlocal tries
            tries += 1
            return await attempt()

        outcome: Outcome = await retrying(counted)
        return Outcome(outcome.status, outcome.http_status, outcome.detail, outcome.retry_after_s, tries)


class EndpointPolicy:
    """Which URLs a push may be sent to: ``https`` (``http`` only with ``allow_http``), and a host whose
    every address the egress guard accepts (private, loopback, link-local and reserved ones only with
    ``allow_private``; the ``egress`` allow-lists apply). Checked when a device is registered; a send goes
    through :attr:`client`, which resolves the host once, checks it again and connects to that checked
    address (no second lookup for DNS rebinding to act on)."""

    def __init__(self, *, allow_http: bool, allow_private: bool, egress: EgressGuard | None = None,
                 timeout_s: float = 10.0) -> None:
        self.allow_http = allow_http
        self.allow_private = allow_private
        self.guard = (egress or EgressGuard()).with_private(allow_private)
        self.client = guarded_client(self.guard, timeout=timeout_s, max_redirects=0)

    def check_shape(self, url: str) -> str:
        """The URL's host, or ``InvalidRequest`` for a URL that is not an acceptable push endpoint."""
        parts = urlsplit(url)
        schemes = ("https", "http") if self.allow_http else ("https",)
        if parts.scheme not in schemes:
            raise InvalidRequest("The endpoint must be an https URL.")
        if not parts.hostname or parts.username or parts.password:
            raise InvalidRequest("The endpoint must name a host (and no credentials).")
        try:
            parts.port  # noqa: B018 - raises for a malformed port
        except ValueError as exc:
            raise InvalidRequest("The endpoint's port is not valid.") from exc
        return parts.hostname

    async def check(self, url: str) -> None:
        self.check_shape(url)
        try:
            await self.guard.check(url)
        except UrlNotAllowed as exc:
            raise InvalidRequest("The endpoint's host is not a public address.") from exc
        except (FetchFailed, InvalidUrl) as exc:
            raise InvalidRequest("The endpoint's host cannot be resolved.") from exc

    async def aclose(self) -> None:
        await self.client.aclose()
