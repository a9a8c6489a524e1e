"""The JobQueue port: durable background work, per tenant. Backend: ``jobs/queue.py`` (a job table)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from atrium.accounts.ownership import Owner
from atrium.store.models import Job

ProgressFn = Callable[[float], Awaitable[None]]
Handler = Callable[[Job, ProgressFn], Awaitable[dict[str, Any]]]


class JobQueue(Protocol):
    """Durable background work, per tenant. A job belongs to who queued it (``owner``): ``get`` finds
    only the owner's jobs."""

    async def enqueue(self, tenant: str, kind: str, payload: dict[str, Any], *, owner: Owner) -> str: ...

    async def get(self, tenant: str, job_id: str, *, owner: Owner) -> Job: ...
