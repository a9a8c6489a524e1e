"""The durable job queue: runs, failures, crash recovery, tenant scoping, one run per job."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import update

from atrium.accounts.ownership import Owner
from atrium.errors import AppError, InvalidRequest, NotFound
from atrium.jobs.ports import ProgressFn
from atrium.jobs.queue import DatabaseJobQueue
from atrium.store.engine import Database, build_engine
from atrium.store.migrate import upgrade
from atrium.store.models import Job, Organization
from tests.job_helpers import work_until_idle

OWNER = Owner("user-1", None)


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'jobs.db'}"
    await anyio.to_thread.run_sync(upgrade, url)
    database = Database(build_engine(url))
    async with database.system_session() as session:
        session.add_all([Organization(id="org-a", name="a"), Organization(id="org-b", name="b")])
    yield database
    await database.dispose()


async def test_job_runs_and_reports_progress_and_result(db: Database) -> None:
    seen: list[float] = []

    async def handler(job: Job, progress: ProgressFn) -> dict[str, Any]:
        await progress(0.5)
        seen.append((await queue.get(job.org_id, job.id, owner=OWNER)).progress)
        return {"echo": job.payload["value"]}

    queue = DatabaseJobQueue(db, {"echo": handler})
    job_id = await queue.enqueue("org-a", "echo", {"value": 42}, owner=OWNER)
    assert (await queue.get("org-a", job_id, owner=OWNER)).status == "queued"
    await work_until_idle(queue)
    job = await queue.get("org-a", job_id, owner=OWNER)
    assert (job.status, job.result, job.progress, job.attempts) == ("succeeded", {"echo": 42}, 1.0, 1)
    assert seen == [0.5]


async def test_watchers_hear_each_change_and_a_failing_one_changes_nothing(db: Database) -> None:
    heard: list[tuple[str, float | None, str | None]] = []

    async def handler(job: Job, progress: ProgressFn) -> dict[str, Any]:
        await progress(0.25)
        if job.payload["fail"]:
            raise InvalidRequest("bad file")
        return {}

    async def watcher(job: Job) -> None:
        heard.append((job.status, job.progress, job.error))

    async def broken(job: Job) -> None:
        raise RuntimeError("watcher down")

    queue = DatabaseJobQueue(db, {"work": handler}, watchers=(broken, watcher))
    ok = await queue.enqueue("org-a", "work", {"fail": False}, owner=OWNER)
    bad = await queue.enqueue("org-a", "work", {"fail": True}, owner=OWNER)
    await work_until_idle(queue)
    assert heard == [("running", 0.25, None), ("succeeded", 1.0, None),
                     ("running", 0.25, None), ("failed", 0.25, "bad file")]
    assert (await queue.get("org-a", ok, owner=OWNER)).status == "succeeded"
    assert (await queue.get("org-a", bad, owner=OWNER)).status == "failed"


async def test_failures_are_recorded_without_internal_details(db: Database) -> None:
    async def bad_input(job: Job, progress: ProgressFn) -> dict[str, Any]:
        raise InvalidRequest("notes.txt is not UTF-8 text")

    async def crash(job: Job, progress: ProgressFn) -> dict[str, Any]:
        raise RuntimeError("secret path /srv/keys/atr_internal")

    queue = DatabaseJobQueue(db, {"bad": bad_input, "crash": crash})
    bad_id = await queue.enqueue("org-a", "bad", {}, owner=OWNER)
    crash_id = await queue.enqueue("org-a", "crash", {}, owner=OWNER)
    await work_until_idle(queue)
    assert (await queue.get("org-a", bad_id, owner=OWNER)).error == "notes.txt is not UTF-8 text"
    crashed = await queue.get("org-a", crash_id, owner=OWNER)
    assert crashed.status == "failed" and crashed.error == "internal error"


async def test_unknown_kind_and_other_tenants_are_refused(db: Database) -> None:
    async def noop(job: Job, progress: ProgressFn) -> dict[str, Any]:
        return {}

    queue = DatabaseJobQueue(db, {"noop": noop})
    with pytest.raises(AppError):
        await queue.enqueue("org-a", "mystery", {}, owner=OWNER)
    job_id = await queue.enqueue("org-a", "noop", {}, owner=OWNER)
    with pytest.raises(NotFound):
        await queue.get("org-b", job_id, owner=OWNER)
    # Private to who queued it: another user, or a key acting as no user, does not find it.
    for stranger in (Owner("user-2", None), Owner(None, "key-1")):
        with pytest.raises(NotFound):
            await queue.get("org-a", job_id, owner=stranger)
    assert (await queue.get("org-a", job_id, owner=OWNER)).user_id == OWNER.user_id


async def test_recovery_requeues_interrupted_jobs_and_gives_up_after_max_attempts(db: Database) -> None:
    runs: list[str] = []

    async def handler(job: Job, progress: ProgressFn) -> dict[str, Any]:
        runs.append(job.id)
        return {}

    queue = DatabaseJobQueue(db, {"work": handler}, max_attempts=3)
    fresh = await queue.enqueue("org-a", "work", {}, owner=OWNER)
    worn = await queue.enqueue("org-a", "work", {}, owner=OWNER)
    async with db.system_session() as session:  # as a process killed mid-job leaves them
        await session.execute(update(Job).where(Job.id == fresh).values(status="running", attempts=1))
        await session.execute(update(Job).where(Job.id == worn).values(status="running", attempts=3))
    assert await queue.recover() == 2
    await work_until_idle(queue)
    assert runs == [fresh]
    assert (await queue.get("org-a", fresh, owner=OWNER)).status == "succeeded"
    worn_job = await queue.get("org-a", worn, owner=OWNER)
    assert worn_job.status == "failed" and "interruptions" in (worn_job.error or "")


async def test_two_workers_never_run_the_same_job_twice(db: Database) -> None:
    runs: list[str] = []

    async def handler(job: Job, progress: ProgressFn) -> dict[str, Any]:
        runs.append(job.id)
        await asyncio.sleep(0.01)
        return {}

    first = DatabaseJobQueue(db, {"work": handler}, poll_interval_s=0.01)
    second = DatabaseJobQueue(db, {"work": handler}, poll_interval_s=0.01)
    ids = [await first.enqueue("org-a", "work", {"n": n}, owner=OWNER) for n in range(20)]
    workers = [asyncio.create_task(first.work()), asyncio.create_task(second.work())]
    for _ in range(500):
        if len(runs) >= len(ids):
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)
    for worker in workers:
        worker.cancel()
    await asyncio.gather(*workers, return_exceptions=True)
    assert sorted(runs) == sorted(ids)
