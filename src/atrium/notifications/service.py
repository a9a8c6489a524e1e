"""The notification use cases: push a notification to every device of a user (or of a key acting as no
user), and the hooks other rooms call when something the user waits for happens.

* ``job_changed(job)``: the job queue's watcher (``jobs/ports.py``): the job's owner hears that an
  ingestion job finished or failed (``job_finished``);
* ``flow_waiting(org_id, owner, flow_id, prompt)``: a guided flow paused for its starter's answer (the
  container's ``FlowWaitingHook``, beside the realtime ``flow.prompt`` event).

Hooks only schedule the sending (a task of this service, off the request and job paths) and return at
once; a failure is logged (the outcome's reason, never a key or an endpoint) and breaks nothing. A device
the service reports gone is deleted; ``close`` waits for sends in progress.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from typing import Any

from atrium.accounts.ownership import Owner
from atrium.notifications.devices import DeviceRegistry
from atrium.notifications.ports import Device, DeviceKind, Notification, Notifier, Outcome
from atrium.store.models import Job

log = logging.getLogger(__name__)

MAX_TITLE, MAX_BODY = 120, 400


class NotificationService:
    """Sends through the configured ``notifiers`` (one per device kind); ``enabled`` off: sends nothing."""

    def __init__(self, devices: DeviceRegistry, notifiers: Mapping[DeviceKind, Notifier], *, enabled: bool,
                 vapid_public_key: str | None = None, job_kinds: tuple[str, ...] = ("ingest",)) -> None:
        self.devices = devices
        self.notifiers = dict(notifiers)
        self.enabled = enabled
        self.vapid_public_key = vapid_public_key
        self.job_kinds = job_kinds
        self._tasks: set[asyncio.Task[Any]] = set()

    def accepts(self, kind: DeviceKind) -> bool:
        return self.enabled and kind in self.notifiers

    async def notify_owner(self, org_id: str, owner: Owner, notification: Notification) -> list[Outcome]:
        """Send to each of ``owner``'s devices (concurrently); delete those the service says are gone."""
        if not self.enabled:
            return []
        devices = [device for device in await self.devices.of_owner(org_id, owner) if device.kind in self.notifiers]
        outcomes = list(await asyncio.gather(*(self._send(device, notification) for device in devices)))
        gone = [device.id for device, outcome in zip(devices, outcomes, strict=True) if outcome.status == "gone"]
        delivered = [device.id for device, outcome in zip(devices, outcomes, strict=True)
                     if outcome.status == "delivered"]
        if gone:
            await self.devices.forget(org_id, gone)
        if delivered:
            await self.devices.delivered(org_id, delivered)
        return outcomes

    async def notify_user(self, org_id: str, user_id: str, title: str, body: str,
                          data: Mapping[str, str] | None = None) -> list[Outcome]:
        return await self.notify_owner(org_id, Owner(user_id, None), _notification(title, body, data))

    async def _send(self, device: Device, notification: Notification) -> Outcome:
        try:
            outcome = await self.notifiers[device.kind].send(device, notification)
        except Exception as exc:  # an adapter bug must not stop the other devices
            log.error("notification to device %s failed: %s", device.id, type(exc).__name__)
            return Outcome("failed", detail=type(exc).__name__)
        if outcome.status not in ("delivered", "gone"):
            log.warning("notification to %s device %s: %s (HTTP %s, %s, %d attempts)", device.kind, device.id,
                        outcome.status, outcome.http_status, outcome.detail, outcome.attempts)
        return outcome

    # -- hooks: schedule and return ------------------------------------------------------------------------

    def in_background(self, work: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(self._logged(work, name), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _logged(self, work: Coroutine[Any, Any, Any], name: str) -> None:
        try:
            await work
        except Exception as exc:
            log.error("%s: notification not sent (%s)", name, type(exc).__name__)

    async def job_changed(self, job: Job) -> None:
        """The job queue's watcher (``jobs/ports.py``): ``job_finished`` when the change is its end."""
        self.job_finished(job)

    def job_finished(self, job: Job) -> asyncio.Task[Any] | None:
        """Tell the job's owner that ``job`` (of a kind in ``job_kinds``) ended; nothing for other changes."""
        if not self.enabled or job.kind not in self.job_kinds or job.status not in ("succeeded", "failed"):
            return None
        if job.status == "succeeded":
            title, body = "Your documents are ready", _ingested(job.result)
        else:
            title, body = "Your upload failed", job.error or "The job failed."
        notification = _notification(title, body, {"type": "job", "job_id": job.id, "status": job.status,
                                                    "kind": job.kind})
        owner = Owner(job.user_id, job.api_key_id)
        return self.in_background(self.notify_owner(job.org_id, owner, notification), f"notify-job-{job.id}")

    def flow_waiting(self, org_id: str, owner: Owner, flow_id: str, prompt: str) -> asyncio.Task[Any] | None:
        """A guided flow (``flow_id``) waits for its starter's (``owner``'s) answer to ``prompt``."""
        if not self.enabled:
            return None
        notification = _notification("Your input is needed", prompt, {"type": "flow_waiting", "flow_id": flow_id},
                                     urgency="high")
        return self.in_background(self.notify_owner(org_id, owner, notification), f"notify-flow-{flow_id}")

    async def close(self, grace_s: float = 5.0) -> None:
        """Let scheduled sends finish (up to ``grace_s``), then cancel what is left."""
        pending = set(self._tasks)
        if pending:
            _, late = await asyncio.wait(pending, timeout=grace_s)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        await self.devices.policy.aclose()  # the egress-guarded client Web Push sends through


def _notification(title: str, body: str, data: Mapping[str, str] | None, *,
                  urgency: Any = "normal") -> Notification:
    return Notification(title=_clip(title, MAX_TITLE), body=_clip(body, MAX_BODY),
                        data={str(key): str(value) for key, value in (data or {}).items()}, urgency=urgency)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ingested(result: dict[str, Any] | None) -> str:
    result = result or {}
    documents, errors = len(result.get("documents") or []), len(result.get("errors") or [])
    text = f"{documents} document{'s' if documents != 1 else ''} ingested"
    return f"{text}, {errors} with errors." if errors else f"{text}."
