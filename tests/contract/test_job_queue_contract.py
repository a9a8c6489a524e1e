"""One contract for the JobQueue port and its worker, over the job table on SQLite and on PostgreSQL (pgserver).

What is checked: a queued job is durable and private to its tenant and owner; the worker runs it once,
records progress, result or a safe error (an unexpected one retried, then given up); jobs left running by a
dead process are taken up again; two workers on one database never run a job twice; shutdown lets the job in
progress finish, and a job whose worker is cancelled goes back to the queue; only an expired lease is taken
back; an idempotency key queues once per organisation; a queued job can be cancelled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import update

from atrium.accounts.ownership import Owner
from atrium.errors import AppError, InvalidRequest, NotFound
from atrium.jobs.ports import Handler, JobQueue, ProgressFn
from atrium.jobs.queue import DatabaseJobQueue
from atrium.jobs.settings import JobSettings
from atrium.store.engine import Database, build_engine
from atrium.store.migrate import upgrade
from atrium.store.models import Job, Organization
from tests.job_helpers import work_until_idle

ALICE = Owner("alice", None)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
async def db(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    url = (f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}" if request.param == "sqlite"
           else request.getfixturevalue("postgres_url"))
    await anyio.to_thread.run_sync(upgrade, url)
    database = Database(build_engine(url))
    async with database.system_session() as session:
        session.add_all([Organization(id="org-1", name="one"), Organization(id="org-2", name="two")])
    try:
        yield database
    finally:
        await database.dispose()


def queue_of(db: Database, *, poll_interval_s: float = 0.01, max_attempts: int = 3,
             **handlers: Handler) -> DatabaseJobQueue:
    return DatabaseJobQueue(db, handlers, poll_interval_s=poll_interval_s, max_attempts=max_attempts,
                            settings=JobSettings(lease_s=5, heartbeat_s=1, backoff_base_s=0.01))


async def echo(job: Job, progress: ProgressFn) -> dict[str, Any]:
    return {"got": job.payload}


async def test_a_queued_job_is_stored_for_its_owner_only(db: Database) -> None:
    queue: JobQueue = queue_of(db, echo=echo)
    job_id = await queue.enqueue("org-1", "echo", {"n": 1}, owner=ALICE)
    job = await queue.get("org-1", job_id, owner=ALICE)
    assert (job.org_id, job.kind, job.payload, job.status, job.attempts) == ("org-1", "echo", {"n": 1}, "queued", 0)
    assert job.user_id == "alice"
    for tenant, owner in (("org-2", ALICE), ("org-1", Owner("bob", None)), ("org-1", Owner(None, "key-1"))):
        with pytest.raises(NotFound):
            await queue.get(tenant, job_id, owner=owner)
    with pytest.raises(NotFound):
        await queue.get("org-1", "no-such-job", owner=ALICE)


async def test_a_kind_without_a_handler_is_refused(db: Database) -> None:
    with pytest.raises(AppError):
        await queue_of(db, echo=echo).enqueue("org-1", "unheard-of", {}, owner=ALICE)


async def test_the_worker_runs_each_job_once_with_progress_and_result(db: Database) -> None:
    progress_seen: list[float] = []
    queue = queue_of(db)

    async def steps(job: Job, progress: ProgressFn) -> dict[str, Any]:
        await progress(0.25)
        progress_seen.append((await queue.get(job.org_id, job.id, owner=ALICE)).progress)
        await progress(7.0)  # out of range: kept within [0, 1]
        progress_seen.append((await queue.get(job.org_id, job.id, owner=ALICE)).progress)
        return {"tenant": job.org_id}

    queue.handlers["steps"] = steps
    first = await queue.enqueue("org-1", "steps", {}, owner=ALICE)
    second = await queue.enqueue("org-2", "steps", {}, owner=ALICE)
    await work_until_idle(queue)
    for tenant, job_id in (("org-1", first), ("org-2", second)):
        job = await queue.get(tenant, job_id, owner=ALICE)
        assert (job.status, job.result, job.progress, job.attempts, job.error) == (
            "succeeded", {"tenant": tenant}, 1.0, 1, None)
    assert progress_seen == [0.25, 1.0, 0.25, 1.0]


async def test_a_failed_job_keeps_a_safe_error(db: Database) -> None:
    async def refused(job: Job, progress: ProgressFn) -> dict[str, Any]:
        raise InvalidRequest("report.pdf has no text")

    async def broken(job: Job, progress: ProgressFn) -> dict[str, Any]:
        raise KeyError("/srv/secrets/atr_internal")

    queue = queue_of(db, refused=refused, broken=broken)
    refused_id = await queue.enqueue("org-1", "refused", {}, owner=ALICE)
    broken_id = await queue.enqueue("org-1", "broken", {}, owner=ALICE)
    await work_until_idle(queue)
    refused_job = await queue.get("org-1", refused_id, owner=ALICE)
    broken_job = await queue.get("org-1", broken_id, owner=ALICE)
    assert (refused_job.status, refused_job.error, refused_job.attempts) == ("failed", "report.pdf has no text", 1)
    assert (broken_job.status, broken_job.error, broken_job.attempts) == (
        "failed", "internal error; gave up after 3 attempts", 3)


async def test_jobs_a_dead_process_left_running_are_taken_up_again(db: Database) -> None:
    queue = queue_of(db, echo=echo, max_attempts=2)
    again = await queue.enqueue("org-1", "echo", {"n": 1}, owner=ALICE)
    spent = await queue.enqueue("org-2", "echo", {"n": 2}, owner=ALICE)
    untouched = await queue.enqueue("org-1", "echo", {"n": 3}, owner=ALICE)
    async with db.system_session() as session:
        await session.execute(update(Job).where(Job.id == again).values(status="running", attempts=1))
        await session.execute(update(Job).where(Job.id == spent).values(status="running", attempts=2))
    assert await queue.recover() == 2
    assert (await queue.get("org-1", again, owner=ALICE)).status == "queued"
    assert (await queue.get("org-1", untouched, owner=ALICE)).status == "queued"
    given_up = await queue.get("org-2", spent, owner=ALICE)
    assert given_up.status == "failed" and "interruptions" in (given_up.error or "")
    await work_until_idle(queue)
    rerun = await queue.get("org-1", again, owner=ALICE)
    assert (rerun.status, rerun.attempts, rerun.result) == ("succeeded", 2, {"got": {"n": 1}})
    assert (await queue.get("org-2", spent, owner=ALICE)).status == "failed"


async def test_two_workers_on_one_database_run_every_job_exactly_once(db: Database) -> None:
    ran: list[str] = []

    async def record(job: Job, progress: ProgressFn) -> dict[str, Any]:
        ran.append(job.id)
        await asyncio.sleep(0.005)
        return {}

    one, two = queue_of(db, record=record), queue_of(db, record=record)
    ids = [await one.enqueue("org-1", "record", {"n": n}, owner=ALICE) for n in range(12)]
    other = asyncio.create_task(two.work())
    try:
        await work_until_idle(one)
    finally:
        await two.stop(grace_s=5)
        await other
    assert sorted(ran) == sorted(ids)


async def test_shutdown_lets_the_running_job_finish_and_takes_no_new_one(db: Database) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(job: Job, progress: ProgressFn) -> dict[str, Any]:
        started.set()
        await release.wait()
        return {"finished": True}

    queue = queue_of(db, slow=slow)
    first = await queue.enqueue("org-1", "slow", {}, owner=ALICE)
    worker = asyncio.create_task(queue.work())
    await asyncio.wait_for(started.wait(), timeout=10)
    second = await queue.enqueue("org-1", "slow", {}, owner=ALICE)
    assert await queue.stop(grace_s=0.05) is False  # still busy after the grace period
    release.set()
    await asyncio.wait_for(worker, timeout=10)
    assert (await queue.get("org-1", first, owner=ALICE)).result == {"finished": True}
    assert (await queue.get("org-1", second, owner=ALICE)).status == "queued"


async def test_a_job_cancelled_midway_goes_back_to_the_queue(db: Database) -> None:
    started = asyncio.Event()

    async def endless(job: Job, progress: ProgressFn) -> dict[str, Any]:
        started.set()
        await asyncio.Event().wait()
        return {}

    queue = queue_of(db, endless=endless)
    job_id = await queue.enqueue("org-1", "endless", {}, owner=ALICE)
    worker = asyncio.create_task(queue.work())
    await asyncio.wait_for(started.wait(), timeout=10)
    worker.cancel()
    with pytest.raises(asyncio.CancelledError):
        await worker
    job = await queue.get("org-1", job_id, owner=ALICE)
    assert (job.status, job.attempts) == ("queued", 1)


async def test_only_an_expired_lease_is_taken_back_and_a_key_queues_once(db: Database) -> None:
    queue, other = queue_of(db, echo=echo), queue_of(db, echo=echo)  # two processes on one database
    dead = await queue.enqueue("org-1", "echo", {}, owner=ALICE)
    live = await queue.enqueue("org-1", "echo", {}, owner=ALICE)
    now = datetime.now(UTC)
    async with db.system_session() as session:
        await session.execute(update(Job).where(Job.id == dead).values(
            status="running", attempts=1, lease_owner="gone", lease_expires_at=now - timedelta(seconds=1)))
        await session.execute(update(Job).where(Job.id == live).values(
            status="running", attempts=1, lease_owner="alive", lease_expires_at=now + timedelta(minutes=5)))
    abandoned = await queue.enqueue("org-1", "echo", {}, owner=ALICE)  # cancelled while its dead worker held it
    async with db.system_session() as session:
        await session.execute(update(Job).where(Job.id == abandoned).values(
            status="running", attempts=1, lease_owner="gone", lease_expires_at=now - timedelta(seconds=1)))
    assert (await other.cancel("org-1", abandoned, owner=ALICE)).status == "running"  # asked, not yet done
    assert await other.recover() == 2
    assert (await queue.get("org-1", dead, owner=ALICE)).status == "queued"
    assert (await queue.get("org-1", abandoned, owner=ALICE)).status == "cancelled"
    assert (await queue.get("org-1", live, owner=ALICE)).lease_owner == "alive"

    keyed = await asyncio.gather(*(q.enqueue("org-2", "echo", {}, owner=ALICE, idempotency_key="k-1")
                                   for q in (queue, other, queue)))
    assert len(set(keyed)) == 1
    assert await queue.enqueue("org-1", "echo", {}, owner=ALICE, idempotency_key="k-1") != keyed[0]
    cancelled = await other.cancel("org-2", keyed[0], owner=ALICE)
    assert (cancelled.status, (await queue.get("org-2", keyed[0], owner=ALICE)).status) == ("cancelled", "cancelled")
