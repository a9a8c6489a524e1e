"""What the knowledge room's background jobs (``reembed``, ``rerank_vectors``) share: queueing one job per
collection that still needs it, and working through a collection's chunk ids in batches with progress."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from atrium.accounts.ownership import Owner
from atrium.jobs.ports import ProgressFn
from atrium.store.engine import Database
from atrium.store.models import Job

if TYPE_CHECKING:
    from atrium.jobs.queue import DatabaseJobQueue

SYSTEM = Owner(None, None)  # queued by Atrium itself


async def enqueue_missing(db: Database, jobs: DatabaseJobQueue, kind: str, targets: set[tuple[str, str]],
                          payload: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Queue a ``kind`` job with ``payload`` (plus the collection) for every (tenant, collection) of
    ``targets`` that has no queued or running ``kind`` job with that same payload. Returns (job id, tenant,
    collection) of the new jobs."""
    async with db.system_session() as session:
        active = (await session.execute(select(Job.org_id, Job.payload).where(
            Job.kind == kind, Job.status.in_(("queued", "running"))))).all()
    pending = {(org_id, job_payload.get("collection")) for org_id, job_payload in active
               if all(job_payload.get(key) == value for key, value in payload.items())}
    return [(await jobs.enqueue(tenant, kind, {"collection": collection, **payload}, owner=SYSTEM),
             tenant, collection)
            for tenant, collection in sorted(targets - pending)]


async def in_batches(ids: Sequence[int], size: int, work: Callable[[Sequence[int]], Awaitable[int]],
                     progress: ProgressFn | None) -> int:
    """``work`` over ``ids`` ``size`` at a time, reporting progress up to 0.99 (the caller's last step
    completes it); returns the sum of what ``work`` returned."""
    done = 0
    for start in range(0, len(ids), size):
        done += await work(ids[start:start + size])
        if progress is not None:
            await progress(min(start + size, len(ids)) / max(len(ids), 1) * 0.99)
    return done
