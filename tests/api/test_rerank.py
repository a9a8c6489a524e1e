"""The reranking stage through the API (knowledge/rerank.py): a real app on migrated SQLite with the in-process
job worker; candidates come from the bag-of-words hash embedder and the keyword index, the reranker is a real
ONNX model (the bundled MiniLM standing in for the exported all-mpnet-base-v2, which CI does not build).

Hash vectors and BM25 both put the page that shares the question's words first; the reranking model knows
that a refund is how one gets money back. A collection ingested before the reranker was on gets its vectors
from the ``rerank_vectors`` job, and until then keeps its fused order."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from sqlalchemy import select

from atrium.knowledge import rerank
from atrium.knowledge.embedders.onnx_minilm import OnnxEmbedder, bundled_model_paths
from atrium.settings import Settings
from atrium.store.models import Chunk, Collection, Job
from tests.api.auth_helpers import admin_org
from tests.api.helpers import ingest
from tests.conftest import RunningApp, make_settings, run_app

QUERY = "how do I get my money back"
PAGES = {
    "refunds.md": "Refunds are issued within 14 days of a purchase by the billing team.",
    "office.md": "How do I get to the office? Take the bus and get off at the back entrance; my desk is there.",
    "cats.md": "Cats sleep up to sixteen hours a day and need fresh water daily.",
}
RERANKER = "minilm-as-reranker"


def settings_with(data_dir: Path, enabled: str, **rerank_values: Any) -> Settings:
    model, tokenizer = bundled_model_paths()
    return make_settings(data_dir, knowledge={
        "demo_collection": False, "reconcile_interval_s": 0.2, "index_save_interval_s": 0, "min_relevance": 0.0,
        "rerank": {"enabled": enabled, "model_path": str(model), "tokenizer_path": str(tokenizer), "name": RERANKER,
                   "weight": 1.0, **rerank_values}})


@pytest.fixture
def configs(tmp_path: Path) -> dict[str, Settings]:
    """One data directory under several reranking settings (built off the event loop)."""
    data = tmp_path / "data"
    return {"on": settings_with(data, "on", by_default=True), "off": settings_with(data, "off"),
            "asked": settings_with(data, "on"),
            "other": settings_with(data, "on", name="another-reranker"),
            "none": make_settings(data), "auto": make_settings(data, knowledge={"rerank": {"enabled": "auto"}})}


async def search(app: RunningApp, **body: Any) -> dict[str, Any]:
    response = await app.client.post("/api/v1/search/semantic", json={"query": QUERY, "limit": 3, **body})
    assert response.status_code == 200, response.text
    return response.json()


async def stored(app: RunningApp) -> list[tuple[str, bytes | None]]:
    async with app.services.db.system_session() as session:
        rows = await session.execute(select(Chunk.text, Chunk.rerank_embedding).order_by(Chunk.id))
    return [(text, blob) for text, blob in rows]


async def rerank_model_of(app: RunningApp) -> str | None:
    async with app.services.db.system_session() as session:
        return await session.scalar(select(Collection.rerank_model).where(Collection.name == "docs"))


async def wait_rerank_job(app: RunningApp, timeout: float = 60.0) -> Job:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with app.services.db.system_session() as session:
            jobs = list(await session.scalars(select(Job).where(Job.kind == rerank.JOB_KIND)))
        if jobs and all(job.status in ("succeeded", "failed") for job in jobs):
            assert len(jobs) == 1
            return jobs[0]
        assert asyncio.get_running_loop().time() < deadline, [job.status for job in jobs]
        await asyncio.sleep(0.05)


async def expected_vectors(texts: list[str]) -> np.ndarray:
    model, tokenizer = await anyio.to_thread.run_sync(bundled_model_paths)
    embedder = await OnnxEmbedder.create(model_path=model, tokenizer_path=tokenizer)
    return await embedder.embed(texts)


async def test_reranking_reorders_the_fused_candidates_with_vectors_stored_at_ingestion(
        configs: dict[str, Settings]) -> None:
    async with run_app(configs["on"]) as app:
        await ingest(app.client, PAGES)
        rows = await stored(app)
        assert rows and all(blob is not None for _, blob in rows)
        np.testing.assert_allclose(np.stack([np.frombuffer(blob or b"", dtype=np.float32) for _, blob in rows]),
                                   await expected_vectors([text for text, _ in rows]), atol=1e-5)
        assert await rerank_model_of(app) == RERANKER

        plain = await search(app, rerank=False)
        assert plain["reranked"] is False and plain["results"][0]["source"] == "office.md"
        reranked = await search(app, rerank=True)
        assert reranked["reranked"] is True and reranked["results"][0]["source"] == "refunds.md"
        # Omitted: knowledge.rerank.by_default (on here).
        default = await search(app)
        assert default["reranked"] is True and [r["chunk_id"] for r in default["results"]] == \
            [r["chunk_id"] for r in reranked["results"]]
        # Every mode's candidates can be reranked (no keyword candidate mentions refunds: none to promote).
        assert (await search(app, mode="vector", rerank=True))["results"][0]["source"] == "refunds.md"
        assert (await search(app, mode="vector", rerank=False))["results"][0]["source"] == "office.md"
        assert "refunds.md" not in {r["source"] for r in (await search(app, mode="keyword"))["results"]}


async def test_by_default_off_the_default_reranks_only_when_asked(configs: dict[str, Settings]) -> None:
    async with run_app(configs["asked"]) as app:
        await ingest(app.client, PAGES)
        answer = await search(app)
        assert answer["reranked"] is False and answer["results"][0]["source"] == "office.md"
        assert (await search(app, rerank=True))["results"][0]["source"] == "refunds.md"


async def test_asking_for_reranking_without_a_model_is_a_typed_error(configs: dict[str, Settings]) -> None:
    async with run_app(configs["none"]) as app:
        await ingest(app.client, PAGES)
        response = await app.client.post("/api/v1/search/semantic", json={"query": QUERY, "rerank": True})
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "rerank_unavailable" and error["request_id"]
        answer = await search(app)
        assert answer["reranked"] is False and answer["results"][0]["source"] == "office.md"
        bad = await app.client.post("/api/v1/search/semantic", json={"query": QUERY, "rerank": "maybe"})
        assert bad.status_code == 422 and bad.json()["error"]["code"] != "rerank_unavailable", bad.text


@pytest.mark.parametrize("name", ["auto", "off"])
async def test_auto_without_the_model_files_and_off_load_no_reranker(configs: dict[str, Settings], name: str) -> None:
    async with run_app(configs[name]) as app:
        assert app.services.knowledge.reranker is None


async def test_a_collection_ingested_before_the_reranker_gets_its_vectors_from_the_job(
        configs: dict[str, Settings]) -> None:
    async with run_app(configs["off"]) as first:
        await ingest(first.client, PAGES)
        assert all(blob is None for _, blob in await stored(first))
        assert await rerank_model_of(first) is None

    async with run_app(configs["on"]) as second:
        job = await wait_rerank_job(second)
        assert job.status == "succeeded" and job.progress == 1.0
        rows = await stored(second)
        assert job.result == {"chunks": len(rows), "model": RERANKER}
        np.testing.assert_allclose(np.stack([np.frombuffer(blob or b"", dtype=np.float32) for _, blob in rows]),
                                   await expected_vectors([text for text, _ in rows]), atol=1e-5)
        assert await rerank_model_of(second) == RERANKER
        assert (await search(second, rerank=True))["results"][0]["source"] == "refunds.md"

    # A start with the same model queues nothing more.
    async with run_app(configs["on"]) as third, third.services.db.system_session() as session:
        assert len(list(await session.scalars(select(Job).where(Job.kind == rerank.JOB_KIND)))) == 1


async def test_vectors_of_another_reranking_model_are_never_used_and_are_redone(configs: dict[str, Settings]) -> None:
    async with run_app(configs["on"]) as first:
        await ingest(first.client, PAGES)
        org_id = await admin_org(first)
        async with first.services.db.system_session() as session:
            ids = list(await session.scalars(select(Chunk.id)))
        async with first.services.db.tenant_session(org_id) as session:
            mine = await rerank.stored_vectors(session, org_id, ids, RERANKER, 384)
            theirs = await rerank.stored_vectors(session, org_id, ids, "another-reranker", 384)
        assert set(mine) == set(ids) and theirs == {}

    async with run_app(configs["other"]) as second:
        job = await wait_rerank_job(second)
        assert job.status == "succeeded" and job.result == {"chunks": len(ids), "model": "another-reranker"}
        assert await rerank_model_of(second) == "another-reranker"
        assert (await search(second, rerank=True))["results"][0]["source"] == "refunds.md"
