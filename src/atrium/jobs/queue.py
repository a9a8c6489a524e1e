"""The JobQueue backend (port: ``jobs/ports.py``): a durable job table worked by an in-process worker.

A job is committed before it is announced, so a crash loses none. A worker that claims a job holds it by a
lease (``lease_owner``: this queue's worker id, one per process; ``lease_expires_at``) that a heartbeat task
beside the handler renews every ``heartbeat_s``. Only a ``running`` job whose lease has expired (its process
died or hung) is taken back, by ``recover()`` at start-up and while the worker idles: a job held by a live
process is never taken by another. Every write of a running job's state is conditional on still holding it.

An unexpected failure is retried after an exponential backoff (``run_after``) up to ``max_attempts`` runs,
then the job fails for good ("gave up after N attempts"); a typed ``AppError`` (bad input) fails at once.
Handlers must be idempotent (ingestion is: a document whose content is unchanged is skipped).

Each run is the span ``job.<kind>`` (``tracer``; spans the handler makes, such as its SQL statements and
embedding calls, are its children) and is measured into ``atrium_job_wait_seconds`` (created to started) and
``atrium_job_run_seconds{kind,outcome}``; ``depths()`` counts the queued and running jobs for ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from atrium.accounts.ownership import Owner
from atrium.errors import AppError, InvalidRequest, NotFound
from atrium.jobs.ports import Handler, JobStopped, JobWatcher
from atrium.jobs.settings import JobSettings
from atrium.store.engine import Database
from atrium.store.models import Job
from atrium.telemetry.metrics import JOB_STATES, Metrics
from atrium.telemetry.tracing import NOOP_TRACER, AttributeValue, Tracer

log = logging.getLogger(__name__)

MAX_IDEMPOTENCY_KEY = 200
_ENDED_BY = {"cancelled": "cancelled", "lease lost": "lease_lost"}


def _now() -> datetime:
    return datetime.now(UTC)


def _age_s(moment: datetime | None) -> float | None:
    """Seconds since ``moment`` (a naive value, as SQLite returns them, is UTC)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (_now() - moment).total_seconds())


def worker_id() -> str:
    """A name for this worker, unique among live processes: host, pid and a random part."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


class DatabaseJobQueue:
    """Jobs in the ``jobs`` table, run one at a time by ``work()`` in this process."""

    def __init__(self, db: Database, handlers: dict[str, Handler], *, settings: JobSettings | None = None,
                 max_attempts: int | None = None, poll_interval_s: float | None = None,
                 watchers: Sequence[JobWatcher] = (), tracer: Tracer = NOOP_TRACER,
                 metrics: Metrics | None = None) -> None:
        self.db = db
        self.tracer = tracer
        self.metrics = metrics
        self.watchers = tuple(watchers)  # told of each change of a job (jobs/ports.py: JobWatcher)
        self.handlers = handlers
        self.settings = settings or JobSettings()
        self.max_attempts = max_attempts or self.settings.max_attempts
        self.poll_interval_s = poll_interval_s or self.settings.poll_interval_s
        self.worker_id = worker_id()
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._running: dict[str, asyncio.Task[dict[str, Any]]] = {}  # job id -> its handler, in this process
        self._last_recover = 0.0
        self.run_in_process = True  # whether the API process works this queue (``jobs.run_in_api``)

    async def aclose(self) -> None:
        """Release what the queue holds besides the database (nothing here; an engine's pool)."""

    async def enqueue(self, tenant: str, kind: str, payload: dict[str, Any], *, owner: Owner,
                      idempotency_key: str | None = None) -> str:
        job_id, _created = await self._insert(tenant, kind, payload, owner=owner, idempotency_key=idempotency_key)
        return job_id

    async def _insert(self, tenant: str, kind: str, payload: dict[str, Any], *, owner: Owner,
                      idempotency_key: str | None) -> tuple[str, bool]:
        """Store a queued job; returns its id and whether it is new (not an earlier job with the same key)."""
        if kind not in self.handlers:
            raise AppError(f"unknown job kind {kind!r}")
        if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
            raise InvalidRequest(f"An idempotency key has 1 to {MAX_IDEMPOTENCY_KEY} characters.")
        if idempotency_key is not None and (existing := await self._by_key(tenant, idempotency_key)):
            return existing, False
        try:
            async with self.db.tenant_session(tenant) as session:
                job = Job(org_id=tenant, kind=kind, payload=payload, idempotency_key=idempotency_key,
                          **owner.columns())
                session.add(job)
                await session.flush()
                job_id = job.id
        except IntegrityError:
            # Another caller queued the same key at the same moment: theirs is the job.
            if idempotency_key is None or (existing := await self._by_key(tenant, idempotency_key)) is None:
                raise
            return existing, False
        self._wakeup.set()
        return job_id, True

    async def find_by_key(self, tenant: str, key: str) -> str | None:
        """The job queued in ``tenant`` under idempotency ``key``, if any."""
        return await self._by_key(tenant, key)

    async def _by_key(self, tenant: str, key: str) -> str | None:
        async with self.db.tenant_session(tenant) as session:
            return await session.scalar(select(Job.id).where(Job.org_id == tenant, Job.idempotency_key == key))

    async def get(self, tenant: str, job_id: str, *, owner: Owner) -> Job:
        async with self.db.tenant_session(tenant) as session:
            job = await session.scalar(select(Job).where(Job.org_id == tenant, Job.id == job_id,
                                                         *owner.match(Job)))
        if job is None:
            raise NotFound("No such job.")
        return job

    async def cancel(self, tenant: str, job_id: str, *, owner: Owner) -> Job:
        """Cancel a queued job at once; ask a running one to stop (its worker sees the request at the next
        progress step or heartbeat, or at once when it runs in this process). An ended job is left as is."""
        job = await self.get(tenant, job_id, owner=owner)
        async with self.db.tenant_session(tenant) as session:
            cancelled = await session.execute(
                update(Job).where(Job.org_id == tenant, Job.id == job_id, Job.status == "queued")
                .values(status="cancelled", cancel_requested=True, updated_at=_now()))
            was_queued = cancelled.rowcount == 1  # type: ignore[attr-defined]
            if not was_queued:
                await session.execute(update(Job).where(Job.org_id == tenant, Job.id == job_id,
                                                        Job.status == "running").values(cancel_requested=True))
        job = await self.get(tenant, job_id, owner=owner)
        if was_queued:
            await self._tell(job)
        elif job.status == "running" and (handler := self._running.get(job_id)) is not None:
            handler.cancel()  # ours: stop it now (``_run`` records it cancelled)
        return job

    async def recover(self) -> int:
        """Take back ``running`` jobs whose lease expired (their process died or hung; every tenant's): back to
        the queue, cancelled if that was asked, failed when out of attempts. A live lease is never touched."""
        now = _now()
        async with self.db.system_session() as session:
            stale = list(await session.scalars(select(Job).where(
                Job.status == "running", or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now))))
            session.expunge_all()
        taken = 0
        for job in stale:
            if job.cancel_requested:
                values: dict[str, Any] = {"status": "cancelled"}
            elif job.attempts >= self.max_attempts:
                values = {"status": "failed",
                          "error": f"gave up after {job.attempts} attempts (repeated interruptions)"}
            else:
                values = {"status": "queued", "run_after": None}
            async with self.db.system_session() as session:
                held = (Job.lease_owner.is_(None) if job.lease_owner is None
                        else Job.lease_owner == job.lease_owner)
                done = await session.execute(
                    update(Job).where(Job.id == job.id, Job.status == "running", held,
                                      or_(Job.lease_expires_at.is_(None), Job.lease_expires_at < now))
                    .values(lease_owner=None, lease_expires_at=None, updated_at=_now(), **values))
            if done.rowcount == 1:  # type: ignore[attr-defined]
                taken += 1
                for name, value in values.items():
                    setattr(job, name, value)
                await self._tell(job)
        if taken:
            log.info("took back %d job(s) whose worker's lease expired", taken)
        return taken

    async def work(self) -> None:
        """Run queued jobs until ``stop`` (or cancellation); while idle, take back jobs with expired leases."""
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            job = await self._claim()
            if job is None:
                if loop.time() - self._last_recover >= self.settings.heartbeat_s:
                    self._last_recover = loop.time()
                    await self.recover()
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

    async def depths(self) -> list[tuple[str, str, int]]:
        """``(kind, status, count)`` of queued and running jobs, every tenant's and every kind's (0 included)."""
        async with self.db.system_session() as session:
            rows = (await session.execute(select(Job.kind, Job.status, func.count()).where(Job.status.in_(JOB_STATES))
                                          .group_by(Job.kind, Job.status))).all()
        counts = {(kind, status): int(count) for kind, status, count in rows}
        kinds = sorted(set(self.handlers) | {kind for kind, _ in counts})
        return [(kind, status, counts.get((kind, status), 0)) for kind in kinds for status in JOB_STATES]

    async def _claim(self) -> Job | None:
        # The queue is shared by every tenant: claiming is a system task; the job then runs in its tenant's scope.
        while True:
            now = _now()
            async with self.db.system_session() as session:
                found = (await session.execute(
                    select(Job.id, Job.cancel_requested)
                    .where(Job.status == "queued", or_(Job.run_after.is_(None), Job.run_after <= now))
                    .order_by(Job.created_at).limit(1)
                )).first()
                if found is None:
                    return None
                candidate, cancel_requested = found
                if cancel_requested:  # cancelled while it ran, then sent back to the queue: it ends here
                    done = await session.execute(
                        update(Job).where(Job.id == candidate, Job.status == "queued")
                        .values(status="cancelled", updated_at=now, run_after=None))
                    job = await session.get(Job, candidate) if done.rowcount == 1 else None  # type: ignore[attr-defined]
                else:
                    claimed = await session.execute(
                        update(Job).where(Job.id == candidate, Job.status == "queued")
                        .values(status="running", attempts=Job.attempts + 1, updated_at=now,
                                lease_owner=self.worker_id, run_after=None,
                                lease_expires_at=now + timedelta(seconds=self.settings.lease_s)))
                    if claimed.rowcount != 1:  # type: ignore[attr-defined]
                        return None  # another worker took it
                    return await session.get(Job, candidate)
            if job is not None:
                await self._tell(job)

    async def _run(self, job: Job) -> None:
        waited = _age_s(job.created_at)
        if self.metrics is not None and waited is not None and job.attempts <= 1:
            self.metrics.job_wait.labels(job.kind).observe(waited)
        started = asyncio.get_running_loop().time()
        outcome = "interrupted"
        attributes: dict[str, AttributeValue] = {"atrium.job.kind": job.kind, "atrium.job.id": job.id,
                                                 "atrium.job.attempt": job.attempts}
        try:
            with self.tracer.start_as_current_span(f"job.{job.kind}", attributes=attributes) as span:
                outcome = await self._run_handler(job)
                span.set_attribute("atrium.job.outcome", outcome)
                span.set_status("ok" if outcome in ("succeeded", "cancelled") else "error",
                                None if outcome in ("succeeded", "cancelled") else outcome)
        finally:
            if self.metrics is not None:
                self.metrics.job_run.labels(job.kind, outcome).observe(asyncio.get_running_loop().time() - started)

    async def _run_handler(self, job: Job) -> str:
        """Run the job's handler beside its heartbeat; returns how it ended: ``succeeded``, ``failed``,
        ``retry`` (back to the queue after a backoff), ``cancelled`` or ``lease_lost``."""
        stopped: list[str] = []  # why the handler was cancelled by us: "cancelled" or "lease lost"

        async def progress(fraction: float) -> None:
            if not await self._update(job, progress=max(0.0, min(1.0, fraction))):
                raise JobStopped("lease lost")
            if await self._cancel_requested(job):
                raise JobStopped("cancelled")

        async def call() -> dict[str, Any]:
            return await self.handlers[job.kind](job, progress)

        handler = asyncio.create_task(call(), name=f"job-{job.id}")
        beat = asyncio.create_task(self._heartbeat(job, handler, stopped), name=f"job-{job.id}-heartbeat")
        self._running[job.id] = handler
        try:
            result = await handler
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # the worker itself is cancelled: back to the queue
                await asyncio.shield(self._update(job, status="queued", lease_owner=None, lease_expires_at=None))
                raise
            why = stopped[0] if stopped else "cancelled"
            await self._stopped(job, why)
            return _ENDED_BY[why]
        except JobStopped as exc:
            await self._stopped(job, str(exc))
            return _ENDED_BY.get(str(exc), "cancelled")
        except AppError as exc:
            await self._update(job, status="failed", error=exc.message, lease_owner=None, lease_expires_at=None)
            return "failed"
        except Exception:
            log.exception("job %s (%s) failed (attempt %d)", job.id, job.kind, job.attempts)
            await self._failed(job)
            return "failed" if job.status == "failed" else "cancelled" if job.status == "cancelled" else "retry"
        else:
            if await self._update(job, status="succeeded", result=result, progress=1.0, lease_owner=None,
                                  lease_expires_at=None):
                log.info("job finished: %s (%s), attempt %d", job.id, job.kind, job.attempts)
                return "succeeded"
            return "lease_lost"
        finally:
            self._running.pop(job.id, None)
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat

    async def _stopped(self, job: Job, why: str) -> None:
        if why == "lease lost":
            log.warning("job %s (%s): this worker lost its lease; another takes it up", job.id, job.kind)
            return
        await self._update(job, status="cancelled", lease_owner=None, lease_expires_at=None)

    async def _failed(self, job: Job) -> None:
        """An unexpected failure: retry after a backoff, or, out of attempts, fail for good (dead-letter)."""
        if await self._cancel_requested(job):
            await self._stopped(job, "cancelled")
        elif job.attempts >= self.max_attempts:
            await self._update(job, status="failed", lease_owner=None, lease_expires_at=None,
                               error=f"internal error; gave up after {job.attempts} attempts")
        else:
            delay = min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2 ** (job.attempts - 1))
            await self._update(job, status="queued", error="internal error; to be retried", lease_owner=None,
                               lease_expires_at=None, run_after=_now() + timedelta(seconds=delay))

    async def _heartbeat(self, job: Job, handler: asyncio.Task[Any], stopped: list[str]) -> None:
        """Beside the handler: renew the lease every ``heartbeat_s``; stop the handler if the lease was lost
        or the job was cancelled."""
        while True:
            await asyncio.sleep(self.settings.heartbeat_s)
            try:
                async with self.db.tenant_session(job.org_id) as session:
                    renewed = await session.execute(
                        update(Job).where(Job.org_id == job.org_id, Job.id == job.id, Job.status == "running",
                                          Job.lease_owner == self.worker_id)
                        .values(lease_expires_at=_now() + timedelta(seconds=self.settings.lease_s)))
                held = renewed.rowcount == 1  # type: ignore[attr-defined]
                cancel = held and await self._cancel_requested(job)
            except Exception:
                log.exception("job %s: the lease could not be renewed; trying again", job.id)
                continue
            if not held or cancel:
                stopped.append("cancelled" if held else "lease lost")
                handler.cancel()
                return

    async def _cancel_requested(self, job: Job) -> bool:
        async with self.db.tenant_session(job.org_id) as session:
            return bool(await session.scalar(select(Job.cancel_requested)
                                             .where(Job.org_id == job.org_id, Job.id == job.id)))

    async def _update(self, job: Job, **values: Any) -> bool:
        """Store ``values`` if this worker still holds ``job``, then tell the watchers; False if it does not."""
        async with self.db.tenant_session(job.org_id) as session:
            done = await session.execute(
                update(Job).where(and_(Job.org_id == job.org_id, Job.id == job.id, Job.status == "running",
                                       Job.lease_owner == self.worker_id))
                .values(updated_at=_now(), **values))
        if done.rowcount != 1:  # type: ignore[attr-defined]
            return False
        for name, value in values.items():
            setattr(job, name, value)
        await self._tell(job)
        return True

    async def _tell(self, job: Job) -> None:
        for watcher in self.watchers:
            try:
                await watcher(job)
            except Exception:
                log.exception("job %s (%s): a watcher failed", job.id, job.kind)
