"""The reranking stage in the knowledge service on SQLite + HNSW and on PostgreSQL + pgvector (row-level
security on): reranking vectors are stored at ingestion and read back only for the tenant's own chunks and
the recorded model, a collection ingested before the reranker gets them from ``cover_collection``, and a
reranked search promotes what the reranking model knows. The reranker is a real ONNX model (the bundled
MiniLM standing in for all-mpnet-base-v2); candidates come from the bag-of-words hash embedder."""

from __future__ import annotations

import contextlib
from pathlib import Path

import anyio
import numpy as np
import pytest
from sqlalchemy import select

from atrium.knowledge import rerank
from atrium.knowledge.embedders.fake import HashEmbedder
from atrium.knowledge.embedders.onnx_minilm import OnnxEmbedder
from atrium.knowledge.rerank import EmbeddingReranker
from atrium.knowledge.service import KnowledgeService
from atrium.knowledge.settings import KnowledgeSettings, RerankSettings
from atrium.store.migrate import upgrade
from atrium.store.models import Chunk, Organization
from tests.knowledge_services import knowledge_service
from tests.postgres_fixtures import PostgresServer, postgres, postgres_url  # noqa: F401

ORG, OTHER = "org-a", "org-b"
QUERY = "how do I get my money back"
PAGES = {
    "refunds.md": "Refunds are issued within 14 days of a purchase by the billing team.",
    "office.md": "How do I get to the office? Take the bus and get off at the back entrance; my desk is there.",
    "cats.md": "Cats sleep up to sixteen hours a day and need fresh water daily.",
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'atrium.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(scope="module")
def reranker() -> EmbeddingReranker:
    return EmbeddingReranker(OnnxEmbedder(name="minilm-as-reranker"), RerankSettings(weight=1.0))


def service(url: str, index_dir: Path, reranker: EmbeddingReranker | None
            ) -> contextlib.AbstractAsyncContextManager[KnowledgeService]:
    return knowledge_service(url, index_dir, HashEmbedder(64), KnowledgeSettings(min_relevance=0.0), reranker=reranker)


async def top(knowledge: KnowledgeService, tenant: str, rerank_it: bool) -> str:
    hits = await knowledge.search(tenant, QUERY, mode="hybrid", limit=3, rerank=rerank_it)
    return hits[0].chunk.source


async def test_vectors_stored_at_ingestion_rerank_the_tenants_own_search(
        database_url: str, tmp_path: Path, reranker: EmbeddingReranker) -> None:
    await anyio.to_thread.run_sync(upgrade, database_url)
    async with service(database_url, tmp_path / "index", reranker) as knowledge:
        async with knowledge.db.system_session() as session:
            session.add_all([Organization(id=ORG, name="a"), Organization(id=OTHER, name="b")])
        for source, text in PAGES.items():
            await knowledge.ingest_text(ORG, "docs", source, text)
            await knowledge.ingest_text(OTHER, "docs", source, text)
        assert await top(knowledge, ORG, False) == "office.md"
        assert await top(knowledge, ORG, True) == "refunds.md"
        async with knowledge.db.system_session() as session:
            rows = (await session.execute(select(Chunk.id, Chunk.org_id, Chunk.text, Chunk.rerank_embedding))).all()
        expected = await reranker.embed_documents([text for _, _, text, _ in rows])
        np.testing.assert_allclose(np.stack([np.frombuffer(blob, dtype=np.float32) for *_, blob in rows]),
                                   expected, atol=1e-5)
        # Read back under the tenant's scope: its own chunks only, and only for the recorded model.
        ids = [chunk_id for chunk_id, *_ in rows]
        async with knowledge.db.tenant_session(ORG) as session:
            mine = await rerank.stored_vectors(session, ORG, ids, reranker.name, reranker.dimensions)
            other_model = await rerank.stored_vectors(session, ORG, ids, "another", reranker.dimensions)
        assert set(mine) == {chunk_id for chunk_id, org, *_ in rows if org == ORG} and other_model == {}


async def test_a_collection_ingested_before_the_reranker_is_covered_later(
        database_url: str, tmp_path: Path, reranker: EmbeddingReranker) -> None:
    await anyio.to_thread.run_sync(upgrade, database_url)
    async with service(database_url, tmp_path / "index", None) as plain:
        async with plain.db.system_session() as session:
            session.add(Organization(id=ORG, name="a"))
        for source, text in PAGES.items():
            await plain.ingest_text(ORG, "docs", source, text)
    async with service(database_url, tmp_path / "index", reranker) as knowledge:
        assert await rerank.uncovered(knowledge.db, reranker.name) == {(ORG, "docs")}
        # Without vectors a reranked search keeps the fused order.
        assert await top(knowledge, ORG, True) == "office.md"
        assert await rerank.cover_collection(knowledge.db, reranker, ORG, "docs") == len(PAGES)
        assert await rerank.uncovered(knowledge.db, reranker.name) == set()
        assert await top(knowledge, ORG, True) == "refunds.md"
        # Running it again finds nothing left to do.
        assert await rerank.cover_collection(knowledge.db, reranker, ORG, "docs") == 0
