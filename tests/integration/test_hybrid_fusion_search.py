"""Hybrid search fuses with the configured ``knowledge.fusion`` and ``knowledge.vector_weight`` (issue 14):
a real migrated SQLite file (FTS5), the hash embedder and the in-memory HNSW index."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from atrium.knowledge.embedders.fake import HashEmbedder
from atrium.knowledge.fusion import FusionMethod, fuse
from atrium.knowledge.keyword import SqliteKeywordSearch
from atrium.knowledge.service import KnowledgeService
from atrium.knowledge.settings import KnowledgeSettings
from atrium.knowledge.vector.hnsw import HnswVectorIndex
from atrium.store.engine import Database, build_engine
from atrium.store.migrate import upgrade
from atrium.store.models import Organization

ORG = "org-a"
QUERY = "how do I rotate the signing keys of the token service"
DOCS = {
    # The query's phrasing, word pairs and all, without its rare words: the bag of words likes it.
    "phrasing.md": "How do I rotate the wheel of the car? How do I rotate the chair of the desk?",
    # Only the rare words: BM25 likes it (every other page has the common ones).
    "rare.md": "Signing token keys.",
    "other.md": "How do I read the invoice of the month? The PDF of the invoice.",
    "near.md": "How do I paint the door of the shed? The colour of the door.",
    "far.md": "How do I plant the seeds of the tree? The soil of the garden.",
}


@contextlib.asynccontextmanager
async def knowledge(directory: Path, settings: KnowledgeSettings) -> AsyncIterator[KnowledgeService]:
    """A fresh knowledge base in ``directory`` (the HNSW index lives in memory) holding ``DOCS``."""
    await anyio.Path(directory).mkdir(parents=True, exist_ok=True)
    url = f"sqlite+aiosqlite:///{directory / 'atrium.db'}"
    await anyio.to_thread.run_sync(upgrade, url)
    db = Database(build_engine(url))
    embedder = HashEmbedder(dimensions=256)
    service = KnowledgeService(db, embedder, HnswVectorIndex(None, embedder.dimensions), SqliteKeywordSearch(),
                               settings)
    try:
        async with db.system_session() as session:
            session.add(Organization(id=ORG, name="a"))
        for source, text in DOCS.items():
            await service.ingest_text(ORG, "docs", source, text)
        yield service
    finally:
        await db.dispose()


async def ranked(service: KnowledgeService, mode: str, limit: int) -> list[tuple[int, float]]:
    hits = await service.search(ORG, QUERY, mode=mode, limit=limit)  # type: ignore[arg-type]
    return [(hit.chunk.id, hit.score) for hit in hits]


@pytest.mark.parametrize(("method", "weight"), [("rrf", 0.5), ("weighted_rrf", 0.8), ("convex", 0.7),
                                                ("convex", 0.3)])
async def test_hybrid_is_the_configured_fusion_of_the_two_rankings(tmp_path: Path, method: FusionMethod,
                                                                    weight: float) -> None:
    settings = KnowledgeSettings(fusion=method, vector_weight=weight, candidates=30)
    async with knowledge(tmp_path, settings) as service:
        vector = await ranked(service, "vector", 30)
        keyword = await ranked(service, "keyword", 30)
        hybrid = await ranked(service, "hybrid", 3)
    expected = fuse(vector, keyword, method=method, vector_weight=weight, k=settings.rrf_k, limit=3)
    assert [i for i, _ in hybrid] == [i for i, _ in expected]
    assert [s for _, s in hybrid] == pytest.approx([s for _, s in expected])


async def test_the_weight_decides_which_ranking_leads(tmp_path: Path) -> None:
    async def order(method: FusionMethod, weight: float) -> list[int]:
        settings = KnowledgeSettings(fusion=method, vector_weight=weight)
        async with knowledge(tmp_path / f"{method}-{weight}", settings) as service:
            return [i for i, _ in await ranked(service, "hybrid", 5)]

    async with knowledge(tmp_path / "default", KnowledgeSettings()) as service:
        vector = [i for i, _ in await ranked(service, "vector", 5)]
        keyword = [i for i, _ in await ranked(service, "keyword", 5)]
    assert vector[0] != keyword[0]  # the two signals disagree on this corpus, so the setting matters
    assert (await order("convex", 1.0))[0] == vector[0]
    assert (await order("convex", 0.0))[0] == keyword[0]
    assert (await order("weighted_rrf", 1.0))[:len(vector)] == vector
    assert (await order("weighted_rrf", 0.0))[0] == keyword[0]


def test_fusion_settings_are_validated() -> None:
    assert KnowledgeSettings(fusion="weighted_rrf", vector_weight=0.9).fusion == "weighted_rrf"
    with pytest.raises(ValueError):
        KnowledgeSettings(fusion="max")
    with pytest.raises(ValueError):
        KnowledgeSettings(vector_weight=1.2)
