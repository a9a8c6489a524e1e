"""Uploads kept in the object store: an upload through the API with the S3 store (moto's server on loopback,
over real HTTP) is in the bucket before its job is queued, the job reads it from there (nothing is on local
disk), and the files are deleted when the job ends: succeeded, cancelled, failed for good (a retry keeps
them). A store that refuses an upload answers a typed 503 and queues nothing; a worker that cannot reach the
store fails the run with an untyped error (so the queue retries it), and a file that is gone is an error of
that file only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from atrium.knowledge.ingest import StoreUnreachable, upload_cleanup, upload_job_handler
from atrium.store.models import Job
from atrium.store.objects.factory import build_object_store
from atrium.store.objects.ports import ObjectStore
from atrium.store.objects.settings import ObjectStoreSettings
from tests.api.helpers import upload, wait_job
from tests.conftest import RunningApp, make_settings, run_app
from tests.s3_fixtures import bucket_keys, s3_settings_for

DOCS = {"heron.md": "# Herons\n\nThe grey heron nests in colonies called heronries.\n",
        "kingfisher.txt": "Kingfishers dive for small fish from a perch above the water.\n"}


async def local_files(root: Path) -> list[Path]:
    return await asyncio.to_thread(lambda: [p for p in root.rglob("*") if p.is_file()] if root.exists() else [])


@pytest.fixture
async def s3_app(tmp_path: Path, s3_settings: ObjectStoreSettings) -> AsyncIterator[RunningApp]:
    settings = await asyncio.to_thread(make_settings, tmp_path / "data", object_store=s3_settings)
    async with run_app(settings) as running:
        yield running


async def test_an_upload_goes_through_the_s3_store(s3_app: RunningApp, s3_endpoint: str,
                                                   s3_settings: ObjectStoreSettings) -> None:
    bucket = s3_settings.bucket
    assert bucket is not None
    uploads_dir = s3_app.services.settings.uploads_dir
    seen: dict[str, Any] = {}
    queue = s3_app.services.jobs
    enqueue = queue.enqueue

    async def recording(tenant: str, kind: str, payload: dict[str, Any], **kwargs: Any) -> str:
        seen["keys"] = await asyncio.to_thread(bucket_keys, s3_endpoint, bucket)  # before the job exists
        seen["local"] = await local_files(uploads_dir)
        seen["folder"] = payload["folder"]
        return await enqueue(tenant, kind, payload, **kwargs)

    queue.enqueue = recording  # type: ignore[method-assign]
    accepted = await upload(s3_app.client, DOCS, "birds")
    folder = seen["folder"]
    assert folder.startswith(f"{(await s3_app.client.get('/api/v1/admin/org')).json()['id']}/")
    assert seen["keys"] == [f"atrium/uploads/{folder}/000-heron.md", f"atrium/uploads/{folder}/001-kingfisher.txt"]
    assert seen["local"] == []  # nothing on local disk: the worker can only have read the bucket
    job = await wait_job(s3_app.client, accepted["job_id"])
    assert job["status"] == "succeeded" and job["result"]["errors"] == [], job
    assert sorted(d["source"] for d in job["result"]["documents"]) == sorted(DOCS)
    found = await s3_app.client.post("/api/v1/search/semantic", json={"query": "heronries colonies",
                                                                      "collection": "birds", "mode": "keyword"})
    assert found.status_code == 200 and found.json()["results"][0]["source"] == "heron.md", found.text
    assert await _eventually_empty(s3_endpoint, bucket)
    assert await local_files(uploads_dir) == []


async def test_a_cancelled_uploads_files_are_deleted(tmp_path: Path, s3_endpoint: str,
                                                    s3_settings: ObjectStoreSettings) -> None:
    bucket = s3_settings.bucket
    assert bucket is not None
    settings = await asyncio.to_thread(make_settings, tmp_path / "data", object_store=s3_settings,
                                       jobs={"run_in_api": False})  # no worker: the job waits, queued
    async with run_app(settings) as app:
        job_id = (await upload(app.client, DOCS))["job_id"]
        assert len(await asyncio.to_thread(bucket_keys, s3_endpoint, bucket)) == 2
        cancelled = await app.client.post(f"/api/v1/jobs/{job_id}/cancel")
        assert cancelled.json()["status"] == "cancelled"
        assert await _eventually_empty(s3_endpoint, bucket)


async def test_a_store_that_refuses_the_upload_is_a_typed_503(tmp_path: Path, s3_endpoint: str) -> None:
    broken = s3_settings_for(s3_endpoint, "no-such-bucket-for-uploads")
    settings = await asyncio.to_thread(make_settings, tmp_path / "data", object_store=broken)
    async with run_app(settings) as app:
        refused = await app.client.post("/api/v1/documents", data={"collection": "birds"},
                                        files=[("files", ("heron.md", DOCS["heron.md"].encode(), "text/markdown"))])
        assert refused.status_code == 503, refused.text
        error = refused.json()["error"]
        assert error["code"] == "object_store_unavailable" and "NoSuchBucket" in error["message"]
        assert broken.secret_access_key is not None
        assert broken.secret_access_key.get_secret_value() not in refused.text
        async with app.services.db.system_session() as session:
            assert await session.scalar(select(func.count()).select_from(Job)) == 0


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path,
                s3_settings: ObjectStoreSettings) -> AsyncIterator[ObjectStore]:
    settings = ObjectStoreSettings() if request.param == "local" else s3_settings
    made = await build_object_store(settings, uploads_dir=tmp_path / "uploads")
    yield made
    await made.aclose()


@pytest.mark.parametrize(("kind", "status", "kept"), [
    ("ingest", "succeeded", False), ("ingest", "failed", False), ("ingest", "cancelled", False),
    ("ingest", "queued", True),  # failed, waiting for its retry: the retry needs the files
    ("ingest", "running", True), ("ingest_url", "succeeded", True)])
async def test_an_upload_jobs_files_go_when_it_ends(store: ObjectStore, kind: str, status: str, kept: bool) -> None:
    await store.put("org/job1/000-a.md", b"a")
    await store.put("org/job2/000-b.md", b"b")
    job = Job(id="j1", org_id="org", kind=kind, status=status,
              payload={"folder": "org/job1", "collection": "c", "files": []})
    await upload_cleanup(store)(job)
    assert await store.keys("org/job1") == (["org/job1/000-a.md"] if kept else [])
    assert await store.keys("org/job2") == ["org/job2/000-b.md"]  # another job's files are never touched


async def test_an_unreachable_store_fails_the_run_for_a_retry(tmp_path: Path, s3_bucket: str) -> None:
    settings = await asyncio.to_thread(make_settings, tmp_path / "data")
    down = await build_object_store(s3_settings_for("http://127.0.0.1:9", s3_bucket, max_attempts=1,
                                                    connect_timeout_s=1), uploads_dir=Path("/nonexistent"))
    async with run_app(settings) as app:
        handler = upload_job_handler(app.services.knowledge, down)
        job = Job(id="j1", org_id="org", kind="ingest", status="running",
                  payload={"folder": "org/job1", "collection": "c",
                           "files": [{"stored_as": "000-a.md", "source": "a.md"}]})

        async def progress(_fraction: float) -> None:
            return None

        with pytest.raises(StoreUnreachable):  # not an AppError: the queue retries it after its backoff
            await handler(job, progress)
        gone = upload_job_handler(app.services.knowledge, app.services.objects)  # the local store: no such file
        summary = await gone(job, progress)
        assert summary["errors"] == [{"source": "a.md", "code": "object_missing",
                                      "message": "The stored file is missing."}]
    await down.aclose()


async def _eventually_empty(endpoint: str, bucket: str, timeout: float = 10.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while await asyncio.to_thread(bucket_keys, endpoint, bucket):
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True
