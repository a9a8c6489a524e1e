"""The JobQueue backend of the scale profile (port: ``jobs/ports.py``): procrastinate on PostgreSQL dispatches.

The ``jobs`` table stays the record users see (``GET /api/v1/jobs/{id}``, progress, cancel, idempotency keys,
owner checks, watchers); procrastinate (``procrastinate_jobs``, same database) does the dispatch, the locking
between worker processes, the retry schedule and the dead-letter. Each Atrium job has one procrastinate job
(task ``atrium.run_job``, ``lock`` and ``queueing_lock`` = the job id, so two never run it at once nor wait twice).

States, both ways:

* queued <-> ``todo`` (a retry waiting for its backoff: ``todo`` with a later ``scheduled_at``);
* running <-> ``doing``: the run first claims the row (``lease_owner``, ``attempts + 1``) as the embedded
  worker does; it keeps the lease renewed and the handler's writes stay conditional on holding it;
* succeeded <-> ``succeeded`` (then deleted from procrastinate's table: the row is the record);
  cancelled <-> ``aborted`` (or ``cancelled`` when it never started);
* failed for good <-> ``failed`` (procrastinate's dead-letter: it keeps the job, it is not retried);
* a job whose process died: procrastinate's worker heartbeat goes stale; every worker's sweep (``recover``)
  sends such ``doing`` jobs back to ``todo`` (procrastinate's stalled-jobs retry) and the next run claims the
  row once its lease has expired (a live lease means a live holder: the run waits, ``RetryLater``);
* a row queued but not handed to procrastinate (the process died between the two writes) is deferred by the
  sweep after ``lease_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from procrastinate import App, PsycopgConnector, RetryDecision
from procrastinate import exceptions as engine_errors
from procrastinate import jobs as engine_jobs
from procrastinate.job_context import JobContext
from procrastinate.retry import BaseRetryStrategy
from procrastinate.schema import SchemaManager
from procrastinate.worker import Worker
from sqlalchemy import select, text, update
from sqlalchemy.engine import make_url

from atrium.accounts.ownership import Owner
from atrium.jobs.queue import DatabaseJobQueue
from atrium.store.models import Job

log = logging.getLogger(__name__)

QUEUE = "atrium"
TASK = "atrium.run_job"
ENDED = ("succeeded", "failed", "cancelled")
SCHEMA_LOCK = 7_310_014  # pg_advisory_lock key: one process at a time installs procrastinate's schema


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def libpq_url(database_url: str) -> str:
    """A SQLAlchemy URL (``postgresql+asyncpg://...``) as libpq takes it (``postgresql://...``)."""
    url = make_url(database_url)
    query = dict(url.query)
    if "ssl" in query and "sslmode" not in query:  # asyncpg's name for it
        query["sslmode"] = query.pop("ssl")
    return url.set(drivername="postgresql", query=query).render_as_string(hide_password=False)


async def ensure_schema(database_url: str) -> bool:
    """Install procrastinate's tables and functions (its pinned version's schema) once, as the owner role;
    True if it did. Under an advisory lock: workers and API processes may start together."""
    async with await psycopg.AsyncConnection.connect(libpq_url(database_url), autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK,))
        try:
            found = await (await conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")).fetchone()
            if found and found[0]:
                return False
            async with conn.transaction():
                await conn.execute(SchemaManager.get_schema())  # one script, no parameters
            log.info("installed procrastinate's schema")
            return True
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK,))


class RetryLater(Exception):
    """Raised by a run: procrastinate runs the job again after ``delay_s`` (a backoff, or a live lease)."""

    def __init__(self, delay_s: float, why: str) -> None:
        super().__init__(why)
        self.delay_s = delay_s


class JobFailed(Exception):
    """Raised by a run whose job failed for good: procrastinate keeps it ``failed`` (dead-letter)."""


class _Retries(BaseRetryStrategy):
    """Atrium's row decides (its ``attempts`` against ``jobs.max_attempts``); procrastinate schedules. A run
    cut by the worker's shutdown goes back at once; an error of the run itself (the database away) is tried
    again with the backoff, and if procrastinate gives up the sweep re-defers the row."""

    def __init__(self, base_s: float, max_s: float, limit: int) -> None:
        self.base_s, self.max_s, self.limit = base_s, max_s, limit

    def get_retry_decision(self, *, exception: BaseException, job: engine_jobs.Job) -> RetryDecision | None:
        if isinstance(exception, RetryLater):
            return RetryDecision(retry_at=_now() + timedelta(seconds=exception.delay_s))
        if isinstance(exception, asyncio.CancelledError):
            return RetryDecision(retry_at=_now())
        if isinstance(exception, JobFailed | engine_errors.JobAborted) or job.attempts >= self.limit:
            return None
        return RetryDecision(retry_at=_now() + timedelta(seconds=min(self.max_s, self.base_s * 2 ** job.attempts)))


class ProcrastinateJobQueue(DatabaseJobQueue):
    """Jobs in the ``jobs`` table, dispatched by procrastinate to ``work()`` in any process (``atrium worker``)."""

    def __init__(self, *args: Any, database_url: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = App(connector=PsycopgConnector(conninfo=libpq_url(database_url), min_size=1,
                                                  max_size=max(2, self.settings.concurrency + 2)))
        retries = _Retries(self.settings.backoff_base_s, self.settings.backoff_max_s, self.max_attempts)
        self.task = self.app.task(name=TASK, queue=QUEUE, pass_context=True, retry=retries)(self._run_job)
        self._worker: Worker | None = None
        self._opened = False
        self._opening = asyncio.Lock()

    async def open(self) -> None:
        """Open procrastinate's connection pool (once; on first use, so a process that never queues opens none)."""
        async with self._opening:
            if not self._opened:
                await self.app.open_async()
                self._opened = True

    async def aclose(self) -> None:
        async with self._opening:
            if self._opened:
                await self.app.close_async()
                self._opened = False

    async def _insert(self, tenant: str, kind: str, payload: dict[str, Any], *, owner: Owner,
                      idempotency_key: str | None) -> tuple[str, bool]:
        job_id, created = await super()._insert(tenant, kind, payload, owner=owner, idempotency_key=idempotency_key)
        if created:
            await self._defer(tenant, job_id)
        return job_id, created

    async def _defer(self, tenant: str, job_id: str) -> None:
        await self.open()
        with contextlib.suppress(engine_errors.AlreadyEnqueued):  # already waiting: one is enough
            await self.task.configure(lock=job_id, queueing_lock=job_id).defer_async(job_id=job_id, org_id=tenant)

    async def cancel(self, tenant: str, job_id: str, *, owner: Owner) -> Job:
        job = await super().cancel(tenant, job_id, owner=owner)
        if job.status == "cancelled":  # it never started: drop the waiting dispatch too
            await self.open()
            for waiting in await self.app.job_manager.list_jobs_async(queue=QUEUE, lock=job_id, status="todo"):
                if waiting.id is not None:
                    await self.app.job_manager.cancel_job_by_id_async(waiting.id)
        return job  # a running one stops at its next progress step or heartbeat (``cancel_requested``)

    # --- Running ------------------------------------------------------------------------------------------

    async def _run_job(self, context: JobContext, job_id: str, org_id: str) -> None:
        """The procrastinate task: claim the row, run the handler as the embedded worker does, then tell
        procrastinate how it ended (return, ``RetryLater``, ``JobFailed`` or ``JobAborted``)."""
        job = await self._claim_row(org_id, job_id)
        if job is None:
            return
        await self._tell(job)
        await self._run(job)
        async with self.db.tenant_session(org_id) as session:
            ended = await session.get(Job, job_id)
        if ended is None or ended.lease_owner not in (None, self.worker_id):
            return  # it lost its lease: the job is someone else's now
        if ended.status == "failed":
            raise JobFailed(ended.error or "failed")
        if ended.status == "cancelled":
            raise engine_errors.JobAborted("cancelled")
        if ended.status == "queued":  # an unexpected error, to be retried after the backoff
            delay = (_utc(ended.run_after) - _now()).total_seconds() if ended.run_after else 0.0
            raise RetryLater(max(0.0, delay), "retry")

    async def _claim_row(self, org_id: str, job_id: str) -> Job | None:
        """Take the row for this run: a queued job, or a running one whose holder's lease expired. None if
        there is nothing to run (ended, cancelled); ``RetryLater`` while another live worker holds it."""
        now = _now()
        async with self.db.tenant_session(org_id) as session:
            job = await session.scalar(select(Job).where(Job.org_id == org_id, Job.id == job_id))
            if job is None or job.status in ENDED:
                return None
            lease_end = _utc(job.lease_expires_at) if job.lease_expires_at is not None else None
            if job.status == "running" and lease_end is not None and lease_end > now:
                remaining = (lease_end - now).total_seconds()
                raise RetryLater(min(remaining + 0.5, self.settings.lease_s), "held by a live worker")
            values: dict[str, Any]
            if job.cancel_requested:
                values = {"status": "cancelled", "lease_owner": None, "lease_expires_at": None}
            elif job.status == "running" and job.attempts >= self.max_attempts:
                values = {"status": "failed", "lease_owner": None, "lease_expires_at": None,
                          "error": f"gave up after {job.attempts} attempts (repeated interruptions)"}
            else:
                values = {"status": "running", "attempts": job.attempts + 1, "lease_owner": self.worker_id,
                          "lease_expires_at": now + timedelta(seconds=self.settings.lease_s), "run_after": None}
            done = await session.execute(
                update(Job).where(Job.org_id == org_id, Job.id == job_id, Job.status == job.status,
                                  Job.attempts == job.attempts,
                                  Job.lease_owner.is_(None) if job.lease_owner is None
                                  else Job.lease_owner == job.lease_owner)
                .values(updated_at=now, **values))
            if done.rowcount != 1:  # type: ignore[attr-defined]
                raise RetryLater(0.2, "the row changed under this claim")
            for name, value in values.items():
                setattr(job, name, value)
            session.expunge(job)
        if job.status != "running":
            await self._tell(job)
            if job.status == "failed":
                raise JobFailed(job.error or "failed")
            return None
        return job

    async def work(self) -> None:
        """Run procrastinate's worker on Atrium's queue until ``stop``, sweeping stalled and orphan jobs
        every ``heartbeat_s`` beside it."""
        await self.open()
        self._worker = Worker(self.app, queues=[QUEUE], name=self.worker_id, concurrency=self.settings.concurrency,
                              install_signal_handlers=False, listen_notify=True,
                              delete_jobs="successful",  # the ``jobs`` row is the record; failed ones stay
                              fetch_job_polling_interval=self.poll_interval_s,
                              abort_job_polling_interval=self.settings.heartbeat_s,
                              update_heartbeat_interval=self.settings.heartbeat_s,
                              stalled_worker_timeout=self.settings.lease_s,
                              shutdown_graceful_timeout=self.settings.lease_s)
        if self._stopping.is_set():
            return
        sweeper = asyncio.create_task(self._keep_sweeping(), name="jobs-sweep")
        self._idle.clear()
        try:
            await self._worker.run()
        finally:
            self._idle.set()
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper

    async def stop(self, grace_s: float) -> bool:
        """Take no new job; let the running ones finish for up to ``grace_s``, then cut them: each goes back
        to the queue (its row ``queued``, procrastinate's job ``todo``) for another worker."""
        self._stopping.set()
        if self._worker is None:
            return True
        self._worker.shutdown_graceful_timeout = grace_s
        busy = bool(self._running)
        self._worker.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=grace_s + 5)
        return not busy or not self._running

    async def _keep_sweeping(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            try:
                await self.recover()
            except Exception:
                log.exception("the job sweep failed; trying again")

    async def recover(self) -> int:
        """Send the jobs of workers whose heartbeat went stale back to ``todo``, and hand procrastinate the
        rows it never got (or lost). A job held by a live worker is never touched."""
        await self.open()
        manager = self.app.job_manager
        taken = 0
        for stalled in await manager.get_stalled_jobs(queue=QUEUE, seconds_since_heartbeat=self.settings.lease_s):
            try:
                await manager.retry_job(stalled)
                taken += 1
            except engine_errors.ConnectorException:
                pass  # another worker's sweep took it first
        await manager.prune_stalled_workers(self.settings.lease_s)
        async with self.db.system_session() as session:
            orphans = (await session.execute(text(
                "SELECT j.id, j.org_id FROM jobs j WHERE j.updated_at < :before AND (j.status = 'queued'"
                " OR (j.status = 'running' AND (j.lease_expires_at IS NULL OR j.lease_expires_at < :now)))"
                " AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs p WHERE p.lock = j.id"
                " AND p.status IN ('todo', 'doing'))"),
                {"before": _now() - timedelta(seconds=self.settings.lease_s), "now": _now()})).all()
        for job_id, org_id in orphans:
            await self._defer(org_id, job_id)
            taken += 1
        if taken:
            log.info("sent %d job(s) back to the queue (stalled workers or lost dispatches)", taken)
        return taken
