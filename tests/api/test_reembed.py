"""A change of embedding model re-embeds the collections in the background (knowledge/reembed.py): ingest
with model A (hash, 64-d), restart on the same data with model B (hash, 128-d), the ``reembed`` job runs
(progress visible as a job) and search answers with B's vectors. The app is real: migrated SQLite, the
HNSW index saved to disk between the two runs, the in-process job worker."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import select

from atrium.accounts.api_keys import create_key
from atrium.knowledge import reembed
from atrium.knowledge.embedders.fake import HashEmbedder
from atrium.settings import Settings
from atrium.store.models import Chunk, Collection, Job
from tests.api.auth_helpers import add_user, admin_org
from tests.api.helpers import DOCS, ingest
from tests.conftest import RunningApp, make_settings, run_app
from tests.tenancy_helpers import create_tenant

QUERY = "refunds are issued within 14 days of a purchase"


@pytest.fixture
def models(tmp_path: Path) -> dict[str, Settings]:
    """The same data directory under three embedding models (settings built off the event loop)."""
    return {name: make_settings(tmp_path / "data", embedding={"provider": "hash", "name": name,
                                                              "dimensions": dimensions})
            for name, dimensions in (("hash-a", 64), ("hash-b", 128), ("hash-a2", 64))}


async def collection_row(app: RunningApp, name: str = "docs") -> Collection:
    async with app.services.db.system_session() as session:
        row = await session.scalar(select(Collection).where(Collection.name == name))
    assert row is not None
    return row


async def reembed_jobs(app: RunningApp) -> list[Job]:
    async with app.services.db.system_session() as session:
        return list(await session.scalars(select(Job).where(Job.kind == reembed.JOB_KIND)))


async def wait_reembedded(app: RunningApp, timeout: float = 30.0) -> Job:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        jobs = await reembed_jobs(app)
        if jobs and all(job.status in ("succeeded", "failed") for job in jobs):
            assert len(jobs) == 1
            return jobs[0]
        assert asyncio.get_running_loop().time() < deadline, [job.status for job in jobs]
        await asyncio.sleep(0.05)


async def client_of(app: RunningApp, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=app.client._transport, base_url="http://atrium.test",
                             headers={"Authorization": f"Bearer {key}"})


async def member_key(app: RunningApp) -> str:
    user_id = await add_user(app, "alice@example.com", None, role="member")
    async with app.services.db.system_session() as session:
        _, raw = await create_key(session, org_id=await admin_org(app), user_id=user_id, role="member",
                                  name="alice")
    return raw


async def search(app: RunningApp, mode: str) -> dict[str, Any]:
    response = await app.client.post("/api/v1/search/semantic", json={"query": QUERY, "mode": mode, "limit": 3})
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_new_model_re_embeds_the_collection_and_search_uses_its_vectors(models: dict[str, Settings]) -> None:
    async with run_app(models["hash-a"]) as first:
        await ingest(first.client)
        row = await collection_row(first)
        assert (row.embedding_model, row.embedding_dimensions) == ("hash-a", 64)
        assert (await search(first, "vector"))["results"][0]["source"] == "billing.md"
        assert await reembed_jobs(first) == []

    async with run_app(models["hash-b"]) as second:
        # Whatever the job's progress, a search never meets a vector of the other width.
        for mode in ("vector", "hybrid", "keyword"):
            answer = await search(second, mode)
            assert set(answer["reindexing"]) <= {"docs"}
        job = await wait_reembedded(second)
        async with second.services.db.system_session() as session:
            chunks = list(await session.scalars(select(Chunk).where(Chunk.collection == "docs")))
        assert job.status == "succeeded" and job.progress == 1.0
        assert job.result == {"chunks": len(chunks), "model": "hash-b", "dimensions": 128}
        assert job.payload == {"collection": "docs", "model": "hash-b", "dimensions": 128}
        row = await collection_row(second)
        assert (row.embedding_model, row.embedding_dimensions) == ("hash-b", 128)
        # Every stored vector is B's, and the index holds exactly the chunks.
        expected = HashEmbedder(128).embed_sync([chunk.text for chunk in chunks])
        stored = np.stack([np.frombuffer(chunk.embedding, dtype=np.float32) for chunk in chunks])
        np.testing.assert_allclose(stored, expected, atol=1e-6)
        org_id = chunks[0].org_id
        assert await second.services.index.ids(org_id, "docs") == {chunk.id for chunk in chunks}
        answer = await search(second, "vector")
        assert answer["reindexing"] == [] and answer["results"][0]["source"] == "billing.md"
        query = HashEmbedder(128).embed_sync([QUERY])[0]
        best = next(chunk for chunk in chunks if chunk.id == answer["results"][0]["chunk_id"])
        assert abs(answer["results"][0]["score"] - float(query @ expected[chunks.index(best)])) < 1e-3
        assert (await search(second, "hybrid"))["results"][0]["source"] == "billing.md"
        # The job is Atrium's own: an admin of the organisation reads it, a member or another org does not.
        seen = await second.client.get(f"/api/v1/jobs/{job.id}")
        assert seen.status_code == 200, seen.text
        assert seen.json()["kind"] == "reembed" and seen.json()["status"] == "succeeded"
        async with await client_of(second, await member_key(second)) as member, \
                await client_of(second, (await create_tenant(second.services.db, "Elsewhere")).raw_key) as other:
            for outsider in (member, other):
                refused = await outsider.get(f"/api/v1/jobs/{job.id}")
                assert refused.status_code == 404 and refused.json()["error"]["code"] == "not_found"
        listed = (await second.client.get("/api/v1/collections")).json()["collections"]
        assert [(c["name"], c["embedding_model"], c["embedding_dimensions"]) for c in listed] == [
            ("docs", "hash-b", 128)]

    # A third start with B again queues nothing; the re-embedded index was saved and is reloaded.
    async with run_app(models["hash-b"]) as third:
        assert len(await reembed_jobs(third)) == 1
        assert (await search(third, "vector"))["results"][0]["source"] == "billing.md"


async def test_a_model_of_the_same_width_but_another_name_is_re_embedded_too(models: dict[str, Settings]) -> None:
    async with run_app(models["hash-a"]) as first:
        await ingest(first.client, {"pets.txt": DOCS["pets.txt"]}, collection="pets")
    async with run_app(models["hash-a2"]) as second:
        job = await wait_reembedded(second)
        assert job.status == "succeeded" and job.result is not None and job.result["chunks"] >= 1
        row = await collection_row(second, "pets")
        assert (row.embedding_model, row.embedding_dimensions) == ("hash-a2", 64)
