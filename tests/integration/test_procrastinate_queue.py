"""``ProcrastinateJobQueue`` on real PostgreSQL (pgserver) with procrastinate's real worker, in this process:
the job row and procrastinate's job agree on every outcome (succeeded, retried then succeeded, failed at once
on bad input, given up after ``max_attempts`` = procrastinate's dead-letter, cancelled while running)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from atrium.accounts.ownership import Owner
from atrium.errors import InvalidRequest
from atrium.jobs.ports import Handler, ProgressFn
from atrium.jobs.procrastinate_queue import QUEUE, ProcrastinateJobQueue, ensure_schema
from atrium.jobs.settings import JobSettings
from atrium.store.engine import Database, build_engine
from atrium.store.migrate import upgrade
from atrium.store.models import Job, Organization

pytestmark = pytest.mark.integration
ALICE = Owner("alice", None)


@pytest.fixture
async def url(postgres_url: str) -> AsyncIterator[str]:
    await anyio.to_thread.run_sync(upgrade, postgres_url)
    assert await ensure_schema(postgres_url)
    assert not await ensure_schema(postgres_url)  # once
    yield postgres_url


@pytest.fixture
async def db(url: str) -> AsyncIterator[Database]:
    database = Database(build_engine(url))
    async with database.system_session() as session:
        session.add(Organization(id="org-1", name="one"))
    try:
        yield database
    finally:
        await database.dispose()


async def run_until_ended(queue: ProcrastinateJobQueue, job_ids: list[str], timeout_s: float = 30) -> list[Job]:
    worker = asyncio.create_task(queue.work())
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                jobs = [await queue.get("org-1", job_id, owner=ALICE) for job_id in job_ids]
                if all(job.status in ("succeeded", "failed", "cancelled") for job in jobs):
                    break
                await asyncio.sleep(0.05)
    finally:
        await queue.stop(grace_s=5)
        await worker
        await queue.aclose()
    return jobs


async def engine_status(queue: ProcrastinateJobQueue, job_id: str) -> list[str]:
    await queue.open()
    return [str(job.status) for job in await queue.app.job_manager.list_jobs_async(queue=QUEUE, lock=job_id)]


def queue_of(db: Database, url: str, **handlers: Handler) -> ProcrastinateJobQueue:
    return ProcrastinateJobQueue(db, handlers, database_url=url, settings=JobSettings(
        lease_s=3, heartbeat_s=0.3, poll_interval_s=0.2, backoff_base_s=0.1, max_attempts=3))


async def test_outcomes_map_both_ways(db: Database, url: str) -> None:
    calls: dict[str, int] = {}

    async def flaky(job: Job, progress: ProgressFn) -> dict[str, Any]:
        calls[job.id] = calls.get(job.id, 0) + 1
        if calls[job.id] == 1:
            raise RuntimeError("first time unlucky")
        await progress(0.5)
        return {"ok": True}

    async def refused(job: Job, progress: ProgressFn) -> dict[str, Any]:
        raise InvalidRequest("report.pdf has no text")

    async def broken(job: Job, progress: ProgressFn) -> dict[str, Any]:
        calls[job.id] = calls.get(job.id, 0) + 1
        raise KeyError("/srv/secrets/atr_internal")

    queue = queue_of(db, url, flaky=flaky, refused=refused, broken=broken)
    ids = {kind: await queue.enqueue("org-1", kind, {}, owner=ALICE) for kind in ("flaky", "refused", "broken")}
    assert {kind: await engine_status(queue, job_id) for kind, job_id in ids.items()} == {
        "flaky": ["todo"], "refused": ["todo"], "broken": ["todo"]}
    ended = dict(zip(ids, await run_until_ended(queue, list(ids.values())), strict=True))
    assert (ended["flaky"].status, ended["flaky"].attempts, ended["flaky"].result) == ("succeeded", 2, {"ok": True})
    assert (ended["refused"].status, ended["refused"].attempts, ended["refused"].error) == (
        "failed", 1, "report.pdf has no text")
    assert (ended["broken"].status, ended["broken"].attempts, ended["broken"].error) == (
        "failed", 3, "internal error; gave up after 3 attempts")
    assert calls[ids["broken"]] == 3
    assert await engine_status(queue, ids["flaky"]) == []  # done: the row is the record
    assert await engine_status(queue, ids["refused"]) == ["failed"]  # not retried
    assert await engine_status(queue, ids["broken"]) == ["failed"]  # procrastinate's dead-letter
    await queue.aclose()


async def test_a_running_job_cancelled_by_its_owner_ends_cancelled_and_aborted(db: Database, url: str) -> None:
    started = asyncio.Event()

    async def slow(job: Job, progress: ProgressFn) -> dict[str, Any]:
        started.set()
        for step in range(200):
            await progress(step / 200)
            await asyncio.sleep(0.05)
        return {}

    queue = queue_of(db, url, slow=slow)
    job_id = await queue.enqueue("org-1", "slow", {}, owner=ALICE)
    worker = asyncio.create_task(queue.work())
    try:
        await asyncio.wait_for(started.wait(), 20)
        other = queue_of(db, url)  # the API process: another queue object, no worker
        assert (await other.cancel("org-1", job_id, owner=ALICE)).status == "running"  # asked to stop
        async with asyncio.timeout(10):
            while (await queue.get("org-1", job_id, owner=ALICE)).status != "cancelled":  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        async with asyncio.timeout(10):
            while await engine_status(queue, job_id) != ["aborted"]:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        await other.aclose()
    finally:
        await queue.stop(grace_s=5)
        await worker
        await queue.aclose()
