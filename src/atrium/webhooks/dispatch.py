"""Deliveries: the job queue's watcher that tells an organisation's webhooks of its jobs' ends.

When a job ends (``succeeded``, ``failed`` for good, ``cancelled``) each webhook of the job's organisation
that subscribed to ``job.<status>`` is sent one POST of JSON ``{"type", "timestamp", "data": {"job": ...}}``,
signed in the Standard Webhooks format (the ``standardwebhooks`` library: headers ``webhook-id``, stable
across retries of one message; ``webhook-timestamp``, the try's time; ``webhook-signature``, ``v1,`` and the
base64 HMAC-SHA256 of ``id.timestamp.body`` under the webhook's secret). Sends go through the egress-guarded
client (the host resolved once, checked, connected to the checked address; no redirect followed) and are
retried with tenacity's exponential backoff and jitter; the outcome is recorded on the webhook.

Deliveries run as tasks beside the queue: the watcher only schedules them and returns, so a slow or dead
receiver never holds up a job. They live in the process that ran the job; one that dies mid-retry loses the
rest of that delivery (the webhook's ``last_status`` then stays as it was).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks import Webhook as Signer
from tenacity import AsyncRetrying, RetryCallState, retry_if_result, stop_after_attempt, wait_exponential_jitter

from atrium.guard.egress import FetchFailed, InvalidUrl, UrlNotAllowed
from atrium.notifications.delivery import retry_after_s
from atrium.store.models import Job, Webhook
from atrium.webhooks.registry import WebhookRegistry
from atrium.webhooks.settings import WebhookSettings

log = logging.getLogger(__name__)

ENDED = ("succeeded", "failed", "cancelled")
USER_AGENT = "Atrium-Webhooks/1"


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try's outcome. ``detail`` is short and never holds a secret."""

    delivered: bool
    retryable: bool
    http_status: int | None = None
    detail: str = ""
    retry_after_s: float | None = None


def job_payload(job: Job, event: str, now: datetime) -> dict[str, Any]:
    """The body of a job event (built when the job ends, so later changes of the row do not leak in)."""
    return {"type": event, "timestamp": now.isoformat().replace("+00:00", "Z"),
            "data": {"job": {"id": job.id, "kind": job.kind, "status": job.status, "progress": job.progress,
                             "error": job.error, "result": job.result, "attempts": job.attempts}}}


def signed_headers(secret: str, message_id: str, body: str, now: datetime) -> dict[str, str]:
    """The Standard Webhooks headers for ``body`` sent now."""
    return {"webhook-id": message_id, "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": Signer(secret).sign(message_id, now, body),
            "content-type": "application/json", "user-agent": USER_AGENT}


class WebhookDispatcher:
    """Schedules and runs deliveries (``job_changed`` is the queue's watcher)."""

    def __init__(self, registry: WebhookRegistry, client: httpx.AsyncClient, settings: WebhookSettings, *,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.registry = registry
        self.client = client
        self.settings = settings
        self._sleep = sleep
        self._slots = asyncio.Semaphore(settings.max_concurrent)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._backoff = wait_exponential_jitter(multiplier=settings.initial_backoff_s, max=settings.max_backoff_s,
                                                jitter=settings.initial_backoff_s)

    async def job_changed(self, job: Job) -> None:
        """The job queue's watcher (``jobs/ports.py``): schedule the deliveries of a job's end."""
        if not self.settings.enabled or job.status not in ENDED:
            return
        event = f"job.{job.status}"
        now = datetime.now(UTC)
        body = json.dumps(job_payload(job, event, now), ensure_ascii=False, separators=(",", ":"), default=str)
        self._spawn(self._deliver_all(job.org_id, event, f"msg_{job.id}_{job.status}", body), f"webhooks-{job.id}")

    def _spawn(self, work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(self._logged(work, name), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    @staticmethod
    async def _logged(work: Coroutine[Any, Any, Any], name: str) -> None:
        try:
            await work
        except Exception as exc:
            log.error("%s: webhook delivery failed (%s)", name, type(exc).__name__)

    async def _deliver_all(self, org_id: str, event: str, message_id: str, body: str) -> None:
        for hook in await self.registry.subscribed(org_id, event):
            self._spawn(self.deliver(hook, message_id, body), f"webhook-{hook.id}-{message_id}")

    async def deliver(self, hook: Webhook, message_id: str, body: str) -> Attempt:
        """Send ``body`` to ``hook`` with retries; record and return the last try's outcome."""
        async with self._slots:
            tries = 0

            async def attempt() -> Attempt:
                nonlocal tries
                tries += 1
                return await self._post(hook, message_id, body)

            retrying = AsyncRetrying(stop=stop_after_attempt(self.settings.max_attempts), wait=self._wait,
                                     retry=retry_if_result(self._should_retry),
                                     retry_error_callback=lambda state: state.outcome.result(),  # type: ignore[union-attr]
                                     sleep=self._sleep)
            outcome: Attempt = await retrying(attempt)
        await self.registry.record(hook.org_id, hook.id, delivered=outcome.delivered, http_status=outcome.http_status,
                                   error=outcome.detail)
        if outcome.delivered:
            log.info("webhook %s: %s delivered (try %d)", hook.id, message_id, tries)
        else:
            log.warning("webhook %s: %s not delivered after %d tries (%s)", hook.id, message_id, tries,
                        outcome.detail)
        return outcome

    def _should_retry(self, outcome: Attempt) -> bool:
        if not outcome.retryable:
            return False
        return outcome.retry_after_s is None or outcome.retry_after_s <= self.settings.max_retry_after_s

    def _wait(self, state: RetryCallState) -> float:
        backoff = self._backoff(state)
        outcome = state.outcome.result() if state.outcome is not None and not state.outcome.failed else None
        told = outcome.retry_after_s if isinstance(outcome, Attempt) else None
        return max(backoff, told or 0.0)

    async def _post(self, hook: Webhook, message_id: str, body: str) -> Attempt:
        headers = signed_headers(hook.secret, message_id, body, datetime.now(UTC))
        try:
            # The egress-guarded client: resolved once, checked, connected to the checked address.
            response = await self.client.post(hook.url, content=body.encode("utf-8"), headers=headers,
                                              timeout=self.settings.request_timeout_s)
        except (UrlNotAllowed, InvalidUrl):
            return Attempt(False, False, detail="the URL's host is not an allowed address")
        except FetchFailed:
            return Attempt(False, True, detail="the URL's host cannot be resolved")
        except httpx.TooManyRedirects:
            return Attempt(False, False, detail="redirects are not followed")
        except httpx.HTTPError as exc:
            return Attempt(False, True, detail=f"unreachable ({type(exc).__name__})")
        status = response.status_code
        if 200 <= status < 300:
            return Attempt(True, False, status)
        if status == 429 or status >= 500:
            return Attempt(False, True, status, f"HTTP {status}", retry_after_s(response.headers))
        return Attempt(False, False, status, f"HTTP {status}")

    async def drain(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the deliveries in progress (and those they schedule); True if none is left."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self._tasks:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return False
            await asyncio.wait(set(self._tasks), timeout=left)
        return True

    async def close(self, grace_s: float = 5.0) -> None:
        """Let deliveries in progress finish (up to ``grace_s``), cancel what is left, close the client."""
        if not await self.drain(grace_s):
            late = set(self._tasks)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self.client.aclose()
