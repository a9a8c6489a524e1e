"""``atrium worker`` processes on both profiles, for real: PostgreSQL (pgserver, the application role under RLS)
with procrastinate dispatching, and SQLite with the embedded worker's leases (migration 0015).

What is checked: the API of the scale profile queues and runs nothing itself, a worker process runs the job;
``kill -9`` of a worker mid-job leaves the job to another worker, which finishes it with no chunk missing or
twice; two workers on one queue run every job exactly once; SIGTERM hands the job in progress back to the
queue; a job cancelled before it ran is dropped from procrastinate's queue too.
"""

from __future__ import annotations

import asyncio
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from atrium.jobs.procrastinate_queue import QUEUE, ProcrastinateJobQueue
from atrium.jobs.queue import DatabaseJobQueue
from atrium.store.models import Job
from tests.api.helpers import DOCS, upload, wait_job
from tests.conftest import ADMIN_KEY, make_settings, start_app
from tests.postgres_fixtures import PostgresServer
from tests.tenancy_helpers import database_with_app_role
from tests.worker_harness import (
    ORG,
    OWNER,
    Harness,
    Profile,
    corpus,
    crash_scenario,
    start_worker,
    stop_worker,
    two_workers_scenario,
    wait_ready,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def scale(tmp_path: Path, postgres: PostgresServer) -> Profile:
    """A fresh database; workers and the API connect as a plain application role (RLS applies)."""
    urls = asyncio.run(database_with_app_role(postgres))
    return Profile("procrastinate", tmp_path / "data", urls.app_url, urls.owner_url)


@pytest.fixture(params=["procrastinate", "embedded"])
def profile(request: pytest.FixtureRequest, tmp_path: Path) -> Profile:
    if request.param == "embedded":
        return Profile("embedded", tmp_path / "data")
    scale_profile: Profile = request.getfixturevalue("scale")
    return scale_profile


async def test_kill_9_mid_job_another_worker_finishes_it_with_no_chunk_missing_or_twice(profile: Profile) -> None:
    figures = await crash_scenario(profile, files=80, paragraphs=4)
    assert figures["status_at_kill"] == "running" and figures["progress_at_kill"] < 1.0, figures
    assert figures["final_status"] == "succeeded" and figures["attempts"] == [2], figures
    assert figures["expected"] > 0 and figures["chunks"] == figures["expected"], figures
    assert (figures["duplicate_chunks"], figures["missing_chunks"], figures["duplicate_documents"]) == (0, 0, 0)


async def test_two_workers_on_one_queue_run_every_job_exactly_once(profile: Profile) -> None:
    figures = await two_workers_scenario(profile, jobs=8, files=2, paragraphs=3)
    assert figures["statuses"] == ["succeeded"] and figures["attempts"] == [1] * 8, figures
    assert sum(figures["jobs_per_worker"]) == 8, figures  # each worker logs each job it finished
    assert figures["exit_codes"] == [0, 0], figures
    assert figures["chunks"] == figures["expected"] > 0, figures
    assert (figures["duplicate_chunks"], figures["missing_chunks"], figures["duplicate_documents"]) == (0, 0, 0)


async def test_the_scale_api_queues_and_a_worker_process_runs_the_upload(scale: Profile) -> None:
    settings = make_settings(scale.data_dir, database_url=scale.database_url,
                             migration_database_url=scale.migration_database_url, jobs={"run_in_api": False})
    app, lifespan = await start_app(settings)
    assert isinstance(app.state.services.jobs, ProcrastinateJobQueue)
    worker = None
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://atrium.test",
                                     headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
            job_id = (await upload(client, DOCS))["job_id"]
            await asyncio.sleep(1.5)
            waiting = (await client.get(f"/api/v1/jobs/{job_id}")).json()
            assert waiting["status"] == "queued", waiting  # the API process runs no job in this profile
            worker = start_worker(scale, "api-worker")
            job = await wait_job(client, job_id, timeout=60)
            assert job["status"] == "succeeded", job
            assert job["result"]["counts"] == {"created": len(DOCS)}, job
            hits = (await client.post("/api/v1/search/semantic", json={"query": "refunds", "mode": "keyword"})).json()
            assert hits["results"][0]["source"] == "billing.md"
    finally:
        if worker is not None:
            assert stop_worker(worker) == 0
        await lifespan.__aexit__(None, None, None)


async def test_sigterm_hands_the_running_job_back_and_another_worker_finishes_it(scale: Profile) -> None:
    scale.data_dir.mkdir(parents=True, exist_ok=True)
    async with Harness(scale) as harness:
        env_grace = {"ATRIUM_SERVER__SHUTDOWN_GRACE_S": "0.2"}
        first = start_worker(scale, "term-first", extra_env=env_grace)
        await wait_ready(scale, "term-first")
        job_id = await harness.enqueue(corpus(0, 80, 4))
        await harness.wait_for([job_id], lambda job: job.status == "running" and job.progress > 0.05, timeout_s=60)
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
        released = await harness.job(job_id)
        assert (released.status, released.lease_owner) == ("queued", None), released.status
        second = start_worker(scale, "term-second")
        try:
            done = (await harness.wait_for([job_id], lambda job: job.status == "succeeded", timeout_s=90))[0]
        finally:
            stop_worker(second)
        assert done.attempts == 2
        verdict = await harness.verdict()
        assert (verdict.duplicate_chunks, verdict.missing_chunks, verdict.chunks) == (0, 0, verdict.expected_chunks)


async def test_a_job_cancelled_before_it_ran_leaves_procrastinate_queue_too(scale: Profile) -> None:
    scale.data_dir.mkdir(parents=True, exist_ok=True)
    async with Harness(scale) as harness:
        queue = harness.svc.jobs
        assert isinstance(queue, ProcrastinateJobQueue)
        job_id = await harness.enqueue(corpus(0, 1, 1))
        waiting = list(await queue.app.job_manager.list_jobs_async(queue=QUEUE, lock=job_id))
        assert [str(job.status) for job in waiting] == ["todo"]
        cancelled = await queue.cancel(ORG, job_id, owner=OWNER)
        assert cancelled.status == "cancelled"
        after = list(await queue.app.job_manager.list_jobs_async(queue=QUEUE, lock=job_id))
        assert [str(job.status) for job in after] == ["cancelled"]


async def test_the_api_runs_jobs_itself_when_told_to(scale: Profile) -> None:
    settings = make_settings(scale.data_dir, database_url=scale.database_url,
                             migration_database_url=scale.migration_database_url, jobs={"run_in_api": True})
    started, lifespan = await start_app(settings)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=started), base_url="http://atrium.test",
                                     headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
            job = await wait_job(client, (await upload(client, DOCS))["job_id"], timeout=60)
            assert job["status"] == "succeeded", job
    finally:
        await lifespan.__aexit__(None, None, None)


async def test_a_row_never_handed_to_procrastinate_is_deferred_by_the_sweep(scale: Profile) -> None:
    scale.data_dir.mkdir(parents=True, exist_ok=True)
    async with Harness(scale) as harness:
        queue = harness.svc.jobs
        assert isinstance(queue, ProcrastinateJobQueue)
        # The process died between the row's commit and the dispatch: only the row exists.
        job_id, created = await DatabaseJobQueue._insert(queue, ORG, "ingest", {}, owner=OWNER, idempotency_key=None)
        assert created
        await queue.open()
        assert list(await queue.app.job_manager.list_jobs_async(queue=QUEUE, lock=job_id)) == []
        await queue.recover()  # too recent: an enqueue may still be on its way
        assert list(await queue.app.job_manager.list_jobs_async(queue=QUEUE, lock=job_id)) == []
        async with harness.svc.db.system_session() as session:
            await session.execute(update(Job).where(Job.id == job_id)
                                  .values(updated_at=datetime.now(UTC) - timedelta(seconds=10)))
        assert await queue.recover() == 1
        dispatched = list(await queue.app.job_manager.list_jobs_async(queue=QUEUE, lock=job_id))
        assert [str(job.status) for job in dispatched] == ["todo"]
        assert await queue.recover() == 0  # once is enough
