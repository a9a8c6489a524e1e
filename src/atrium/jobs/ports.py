"""The JobQueue port: durable background work, per tenant. Backend: ``jobs/queue.py`` (a job table)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from atrium.accounts.ownership import Owner
from atrium.store.models import Job

# Reports a handler's progress in [0, 1]. It raises ``JobStopped`` when the job was cancelled or this worker
# no longer holds it (its lease expired and another took it): the handler lets it propagate and stops.
ProgressFn = Callable[[float], Awaitable[None]]
Handler = Callable[[Job, ProgressFn], Awaitable[dict[str, Any]]]
# Told of each stored change of a job (running, progress, its end, cancelled, back to queued for a retry or
# after an interruption), ``job`` carrying the new values. A watcher must return quickly (it schedules slow
# I/O) and its failure never changes the job: the realtime ``job`` event (``realtime/publish.py``) and the
# push when it ends (``notifications``).
JobWatcher = Callable[[Job], Awaitable[None]]


class JobStopped(Exception):
    """Raised by ``ProgressFn`` inside a handler: the job was cancelled, or its lease was lost."""


class JobQueue(Protocol):
    """Durable background work, per tenant. A job belongs to who queued it (``owner``): ``get`` and ``cancel``
    find only the owner's jobs. ``idempotency_key``: a second ``enqueue`` with the same key in the same
    organisation returns the first job's id and queues nothing."""

    async def enqueue(self, tenant: str, kind: str, payload: dict[str, Any], *, owner: Owner,
                      idempotency_key: str | None = None) -> str: ...

    async def get(self, tenant: str, job_id: str, *, owner: Owner) -> Job: ...

    async def cancel(self, tenant: str, job_id: str, *, owner: Owner) -> Job:
        """A queued job is cancelled at once; a running one is asked to stop (it ends ``cancelled``); a job
        that already ended is left as it is. Returns the job as it is after the request."""
        ...
