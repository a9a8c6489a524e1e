"""The durable job queue: runs, failures, crash recovery, tenant scoping, one run per job."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import func, select, update

from atrium.accounts.ownership import Owner
from atrium.errors import AppError, InvalidRequest, NotFound
from atrium.jobs.ports import ProgressFn
from atrium.jobs.queue import DatabaseJobQueue
from atrium.jobs.settings import JobSettings
from atrium.store.engine import Database, build_engine
from atrium.store.migrate import upgrade
from atrium.store.models import Job, Organization
from tests.job_helpers import work_until_idle

OWNER = Owner("user-1", None)
FAST = JobSettings(lease_s=5, heartbeat_s=1, backoff_base_s=0.01, poll_interval_s=0.01)


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

    queue = DatabaseJobQueue(db, {"bad": bad_input, "crash": crash}, settings=FAST)
    bad_id = await queue.enqueue("org-a", "bad", {}, owner=OWNER)
    crash_id = await queue.enqueue("org-a", "crash", {}, owner=OWNER)
    await work_until_idle(queue)
    bad = await queue.get("org-a", bad_id, owner=OWNER)
    assert (bad.status, bad.error, bad.attempts) == ("failed", "notes.txt is not UTF-8 text", 1)  # not retried
    crashed = await queue.get("org-a", crash_id, owner=OWNER)
    assert (crashed.status, crashed.error) == ("failed", "internal error; gave up after 3 attempts")


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


# Leases, retries, cancellation and idempotency: two DatabaseJobQueue instances stand for two processes
# sharing one database (each has its own worker id, as each process has).

async def test_a_live_lease_is_renewed_and_never_taken_by_another_process(db: Database) -> None:
    runs: list[str] = []

    async def long(job: Job, progress: ProgressFn) -> dict[str, Any]:
        runs.append(job.id)
        await asyncio.sleep(2.5)  # well past lease_s: only the heartbeat keeps the job held
        return {}

    short = JobSettings(lease_s=1.0, heartbeat_s=0.1, poll_interval_s=0.02)
    first = DatabaseJobQueue(db, {"long": long}, settings=short)
    second = DatabaseJobQueue(db, {"long": long}, settings=short)
    job_id = await first.enqueue("org-a", "long", {}, owner=OWNER)
    worker = asyncio.create_task(first.work())
    while not runs:  # noqa: ASYNC110 -- the handler records its start
        await asyncio.sleep(0.01)
    other = asyncio.create_task(second.work())  # its idle loop calls recover() and tries to claim
    taken = 0
    while (await first.get("org-a", job_id, owner=OWNER)).status == "running":
        taken += await second.recover()
        await asyncio.sleep(0.05)
    for queue, task in ((first, worker), (second, other)):
        await queue.stop(grace_s=5)
        await task
    job = await first.get("org-a", job_id, owner=OWNER)
    assert (taken, runs, job.status, job.attempts, job.lease_owner) == (0, [job_id], "succeeded", 1, None)


async def test_only_an_expired_lease_is_taken_back(db: Database) -> None:
    async def noop(job: Job, progress: ProgressFn) -> dict[str, Any]:
        return {"by": "second"}

    second = DatabaseJobQueue(db, {"work": noop}, settings=FAST)
    dead = await second.enqueue("org-a", "work", {}, owner=OWNER)
    live = await second.enqueue("org-a", "work", {}, owner=OWNER)
    now = datetime.now(UTC)
    async with db.system_session() as session:  # one process died mid-job; another is alive and renewing
        await session.execute(update(Job).where(Job.id == dead).values(
            status="running", attempts=1, lease_owner="host:1:dead", lease_expires_at=now - timedelta(seconds=1)))
        await session.execute(update(Job).where(Job.id == live).values(
            status="running", attempts=1, lease_owner="host:2:live", lease_expires_at=now + timedelta(minutes=5)))
    assert await second.recover() == 1
    assert await second.recover() == 0
    worker = asyncio.create_task(second.work())
    for _ in range(500):
        if (await second.get("org-a", dead, owner=OWNER)).status == "succeeded":
            break
        await asyncio.sleep(0.01)
    await second.stop(grace_s=5)
    await worker
    taken_back = await second.get("org-a", dead, owner=OWNER)
    assert (taken_back.status, taken_back.attempts, taken_back.result) == ("succeeded", 2, {"by": "second"})
    held = await second.get("org-a", live, owner=OWNER)
    assert (held.status, held.lease_owner, held.attempts) == ("running", "host:2:live", 1)


async def test_a_crash_is_retried_after_a_growing_backoff_then_given_up(db: Database) -> None:
    attempts: dict[str, list[float]] = {"flaky": [], "broken": []}
    loop = asyncio.get_running_loop()

    async def handler(job: Job, progress: ProgressFn) -> dict[str, Any]:
        attempts[job.payload["name"]].append(loop.time())
        if job.payload["name"] == "broken" or len(attempts["flaky"]) < 2:
            raise RuntimeError("disk hiccup")
        return {"ok": True}

    heard: list[tuple[str, str | None]] = []

    async def watcher(job: Job) -> None:
        heard.append((job.status, job.error))

    settings = JobSettings(backoff_base_s=0.2, max_attempts=3, poll_interval_s=0.01)
    queue = DatabaseJobQueue(db, {"work": handler}, settings=settings, watchers=(watcher,))
    flaky = await queue.enqueue("org-a", "work", {"name": "flaky"}, owner=OWNER)
    broken = await queue.enqueue("org-a", "work", {"name": "broken"}, owner=OWNER)
    await work_until_idle(queue)
    flaky_job = await queue.get("org-a", flaky, owner=OWNER)
    assert (flaky_job.status, flaky_job.attempts, flaky_job.result) == ("succeeded", 2, {"ok": True})
    broken_job = await queue.get("org-a", broken, owner=OWNER)
    assert (broken_job.status, broken_job.attempts, broken_job.error) == (
        "failed", 3, "internal error; gave up after 3 attempts")
    first_gap, second_gap = (b - a for a, b in itertools.pairwise(attempts["broken"]))
    assert first_gap >= 0.2 and second_gap >= 0.4  # 0.2 s, then 0.4 s
    assert ("queued", "internal error; to be retried") in heard
    assert heard[-1] == ("failed", "internal error; gave up after 3 attempts")


async def test_cancel_a_queued_job_a_running_one_here_and_one_in_another_process(db: Database) -> None:
    started: dict[str, asyncio.Event] = {name: asyncio.Event() for name in ("here", "stepping", "silent")}
    ran: list[str] = []

    async def handler(job: Job, progress: ProgressFn) -> dict[str, Any]:
        name = job.payload["name"]
        ran.append(name)
        started[name].set()
        if name == "stepping":  # reports progress: sees the request at its next step
            for step in range(1000):
                await progress(step / 1000)
                await asyncio.sleep(0.01)
        await asyncio.sleep(30)
        return {}

    heard: list[tuple[str, str]] = []

    async def watcher(job: Job) -> None:
        heard.append((job.payload.get("name", ""), job.status))

    settings = JobSettings(lease_s=2, heartbeat_s=0.1, poll_interval_s=0.01)
    worker_q = DatabaseJobQueue(db, {"work": handler}, settings=settings, watchers=(watcher,))
    other_q = DatabaseJobQueue(db, {"work": handler}, settings=settings, watchers=(watcher,))  # cancels only

    queued = await other_q.enqueue("org-a", "work", {"name": "never"}, owner=OWNER)
    assert (await other_q.cancel("org-a", queued, owner=OWNER)).status == "cancelled"
    with pytest.raises(NotFound):
        await other_q.cancel("org-a", queued, owner=Owner("user-2", None))

    worker = asyncio.create_task(worker_q.work())
    for name, canceller in (("here", worker_q), ("stepping", other_q), ("silent", other_q)):
        job_id = await worker_q.enqueue("org-a", "work", {"name": name}, owner=OWNER)
        await asyncio.wait_for(started[name].wait(), timeout=10)
        assert (await canceller.cancel("org-a", job_id, owner=OWNER)).status in ("running", "cancelled")
        async with asyncio.timeout(5):
            while (job := await worker_q.get("org-a", job_id, owner=OWNER)).status == "running":  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        assert (job.status, job.lease_owner) == ("cancelled", None)
        # An ended job is left as it is.
        assert (await canceller.cancel("org-a", job_id, owner=OWNER)).status == "cancelled"
    await worker_q.stop(grace_s=5)
    await worker
    assert ran == ["here", "stepping", "silent"]  # the queued one never ran
    assert [entry for entry in heard if entry[1] == "cancelled"] == [
        ("never", "cancelled"), ("here", "cancelled"), ("stepping", "cancelled"), ("silent", "cancelled")]


async def test_an_idempotency_key_returns_the_first_job_per_organisation(db: Database) -> None:
    async def noop(job: Job, progress: ProgressFn) -> dict[str, Any]:
        return {}

    first_q, second_q = (DatabaseJobQueue(db, {"work": noop}) for _ in range(2))
    ids = await asyncio.gather(*(queue.enqueue("org-a", "work", {"n": n}, owner=OWNER, idempotency_key="upload-7")
                                 for n, queue in enumerate((first_q, second_q, first_q, second_q))))
    assert len(set(ids)) == 1
    again = await first_q.enqueue("org-a", "work", {}, owner=OWNER, idempotency_key="upload-7")
    elsewhere = await first_q.enqueue("org-b", "work", {}, owner=OWNER, idempotency_key="upload-7")
    unkeyed = {await first_q.enqueue("org-a", "work", {}, owner=OWNER) for _ in range(2)}
    assert again == ids[0] and elsewhere != ids[0] and len(unkeyed) == 2
    async with db.system_session() as session:
        assert await session.scalar(select(func.count()).select_from(Job)
                                    .where(Job.idempotency_key == "upload-7")) == 2  # one per organisation
    with pytest.raises(InvalidRequest):
        await first_q.enqueue("org-a", "work", {}, owner=OWNER, idempotency_key="k" * 201)


async def test_a_worker_that_lost_its_lease_stops_and_writes_nothing(db: Database) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def handler(job: Job, progress: ProgressFn) -> dict[str, Any]:
        started.set()
        await release.wait()
        await progress(0.5)  # the lease is gone: this raises, the handler stops
        return {"written": True}

    queue = DatabaseJobQueue(db, {"work": handler}, settings=JobSettings(lease_s=60, heartbeat_s=30))
    job_id = await queue.enqueue("org-a", "work", {}, owner=OWNER)
    worker = asyncio.create_task(queue.work())
    await asyncio.wait_for(started.wait(), timeout=10)
    async with db.system_session() as session:  # as if this process hung and another took the job over
        await session.execute(update(Job).where(Job.id == job_id).values(lease_owner="host:9:newer"))
    release.set()
    await asyncio.sleep(0.2)
    await queue.stop(grace_s=5)
    await worker
    job = await queue.get("org-a", job_id, owner=OWNER)
    assert (job.status, job.lease_owner, job.progress, job.result) == ("running", "host:9:newer", 0.0, None)
