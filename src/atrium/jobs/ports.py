"""The JobQueue port: durable background work, per tenant. Backend: ``jobs/queue.py`` (a job table)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from atrium.accounts.ownership import Owner
from atrium.store.models import Job

ProgressFn = Callable[[float], Awaitable[None]]
Handler = Callable[[Job, ProgressFn], Awaitable[dict[str, Any]]]
# Told of each stored change of a job (running, progress, its end, back to queued), ``job`` carrying the new
# values. A watcher must return quickly (it schedules slow I/O) and its failure never changes the job:
# the realtime ``job`` event (``realtime/publish.py``) and the push when it ends (``notifications``).
JobWatcher = Callable[[Job], Awaitable[None]]


class JobQueue(Protocol):
    """Durable background work, per tenant. A job belongs to who queued it (``owner``): ``get`` finds
    only the owner's jobs."""

    async def enqueue(self, tenant: str, kind: str, payload: dict[str, Any], *, owner: Owner) -> str: ...

    async def get(self, tenant: str, job_id: str, *, owner: Owner) -> Job: ...
