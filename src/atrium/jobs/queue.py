"""The JobQueue backend (port: ``jobs/ports.py``): a durable job table worked by an in-process worker.

A job is committed before it is announced, so a crash loses none: at start-up, jobs left ``running`` by a
dead process go back to ``queued`` (up to ``max_attempts``) and run again. Handlers must be idempotent
(ingestion is: a document whose content is unchanged is skipped).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update

from atrium.accounts.ownership import Owner
from atrium.errors import AppError, NotFound
from atrium.jobs.ports import Handler, JobWatcher
from atrium.store.engine import Database
from atrium.store.models import Job

log = logging.getLogger(__name__)

class DatabaseJobQueue:
    """Jobs in the ``jobs`` table, run one at a time by ``work()`` in this process."""

    def __init__(self, db: Database, handlers: dict[str, Handler], *, max_attempts: int = 3,
                 poll_interval_s: float = 1.0, watchers: Sequence[JobWatcher] = ()) -> None:
        self.db = db
        self.watchers = tuple(watchers)  # told of each change of a job (jobs/ports.py: JobWatcher)
        self.handlers = handlers
        self.max_attempts = max_attempts
        self.poll_interval_s = poll_interval_s
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    async def enqueue(self, tenant: str, kind: str, payload: dict[str, Any], *, owner: Owner) -> str:
        if kind not in self.handlers:
            raise AppError(f"unknown job kind {kind!r}")
        async with self.db.tenant_session(tenant) as session:
            job = Job(org_id=tenant, kind=kind, payload=payload, **owner.columns())
            session.add(job)
            await session.flush()
            job_id = job.id
        self._wakeup.set()
        return job_id

    async def get(self, tenant: str, job_id: str, *, owner: Owner) -> Job:
        async with self.db.tenant_session(tenant) as session:
            job = await session.scalar(select(Job).where(Job.org_id == tenant, Job.id == job_id,
                                                         *owner.match(Job)))
        if job is None:
            raise NotFound("No such job.")
        return job

    async def recover(self) -> int:
        """Requeue jobs a dead process left running; fail those out of attempts (every tenant's)."""
        async with self.db.system_session() as session:
            stale = list(await session.scalars(select(Job).where(Job.status == "running")))
            for job in stale:
                if job.attempts >= self.max_attempts:
                    job.status, job.error = "failed", "gave up after repeated interruptions"
                else:
                    job.status = "queued"
                job.updated_at = datetime.now(UTC)
        return len(stale)

    async def work(self) -> None:
        """Run queued jobs until ``stop`` (or cancellation)."""
        while not self._stopping.is_set():
            job = await self._claim()
            if job is None:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), timeout=self.poll_interval_s)
                continue
            self._idle.clear()
            try:
                await self._run(job)
            finally:
                self._idle.set()

    async def stop(self, grace_s: float) -> bool:
        """Let the job in progress finish (up to ``grace_s``) and take no new one. Cancelling a job midway
        can leave writes landing after the caller moved on, so shutdown asks first; returns True if idle."""
        self._stopping.set()
        self._wakeup.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout=grace_s)
        except TimeoutError:
            return False
        return True

    async def _claim(self) -> Job | None:
        # The queue is shared by every tenant: claiming is a system task; the job then runs in its tenant's scope.
        async with self.db.system_session() as session:
            candidate = await session.scalar(
                select(Job.id).where(Job.status == "queued").order_by(Job.created_at).limit(1)
            )
            if candidate is None:
                return None
            claimed = await session.execute(
                update(Job).where(Job.id == candidate, Job.status == "queued")
                .values(status="running", attempts=Job.attempts + 1, updated_at=datetime.now(UTC))
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                return None  # another worker took it
            return await session.get(Job, candidate)

    async def _run(self, job: Job) -> None:
        async def progress(fraction: float) -> None:
            await self._update(job, progress=max(0.0, min(1.0, fraction)))

        try:
            result = await self.handlers[job.kind](job, progress)
        except asyncio.CancelledError:
            await asyncio.shield(self._update(job, status="queued"))
            raise
        except AppError as exc:
            await self._update(job, status="failed", error=exc.message)
            return
        except Exception:
            log.exception("job %s (%s) failed", job.id, job.kind)
            await self._update(job, status="failed", error="internal error")
            return
        await self._update(job, status="succeeded", result=result, progress=1.0)

    async def _update(self, job: Job, **values: Any) -> None:
        async with self.db.tenant_session(job.org_id) as session:
            await session.execute(update(Job).where(Job.org_id == job.org_id, Job.id == job.id)
                                  .values(updated_at=datetime.now(UTC), **values))
        for name, value in values.items():
            setattr(job, name, value)
        for watcher in self.watchers:
            try:
                await watcher(job)
            except Exception:
                log.exception("job %s (%s): a watcher failed", job.id, job.kind)
