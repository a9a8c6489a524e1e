"""Re-embedding a collection after a change of embedding model, step by step (knowledge/reembed.py), on
SQLite + the HNSW index saved to disk and on PostgreSQL + pgvector: while stale, a collection is searchable
(keyword: every chunk; vector: the chunks re-embedded so far) and never meets a vector of another width;
the job replaces every stored vector, reports its progress and records the new model; collections made
before the record existed are adopted."""

from __future__ import annotations

import contextlib
from pathlib import Path

import anyio
import numpy as np
import pytest
from sqlalchemy import select, update

from atrium.knowledge import reembed
from atrium.knowledge.embedders.fake import HashEmbedder
from atrium.knowledge.service import KnowledgeService
from atrium.knowledge.settings import KnowledgeSettings
from atrium.store.migrate import upgrade
from atrium.store.models import Chunk, Collection, Organization
from tests.knowledge_services import knowledge_service
from tests.postgres_fixtures import PostgresServer, postgres, postgres_url  # noqa: F401

ORG = "org-a"
DOCS = {
    "refunds.md": "Refunds are issued within 14 days of a purchase by the billing team.",
    "deploy.md": "The helm chart deploys three replicas behind an ingress with rolling upgrades.",
    "cats.txt": "Cats sleep up to sixteen hours a day and need fresh water daily.",
}
QUERY = "refunds are issued within 14 days of a purchase"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'atrium.db'}"
    return str(request.getfixturevalue("postgres_url"))


def service(url: str, index_dir: Path,
            embedder: HashEmbedder) -> contextlib.AbstractAsyncContextManager[KnowledgeService]:
    """A knowledge service over ``url`` with ``embedder``: a process start with that model."""
    return knowledge_service(url, index_dir, embedder, KnowledgeSettings(min_relevance=0.0))


async def sources(knowledge: KnowledgeService, mode: str) -> list[str]:
    return [hit.chunk.source for hit in await knowledge.search(ORG, QUERY, mode=mode, limit=3)]  # type: ignore[arg-type]


async def recorded(knowledge: KnowledgeService, name: str) -> tuple[str | None, int | None]:
    async with knowledge.db.system_session() as session:
        row = (await session.execute(select(Collection.embedding_model, Collection.embedding_dimensions)
                                     .where(Collection.name == name))).one()
    return row[0], row[1]


async def test_a_stale_collection_stays_searchable_and_its_job_moves_it_to_the_new_model(
        database_url: str, tmp_path: Path) -> None:
    await anyio.to_thread.run_sync(upgrade, database_url)
    old, new = HashEmbedder(64, name="model-a"), HashEmbedder(128, name="model-b")
    async with service(database_url, tmp_path / "index", old) as first:
        async with first.db.system_session() as session:
            session.add(Organization(id=ORG, name="a"))
        for source, text in DOCS.items():
            await first.ingest_text(ORG, "docs", source, text)
        assert await recorded(first, "docs") == ("model-a", 64)
        assert (await sources(first, "vector"))[0] == "refunds.md"

    async with service(database_url, tmp_path / "index", new) as second:
        # Start-up with another model: nothing of the old width is loaded, the collection is stale.
        assert second.reindexing == {(ORG, "docs")}
        assert await reembed.stale(second.db, "model-b", 128) == {(ORG, "docs")}
        assert await second.index.ids(ORG, "docs") == set()
        assert await sources(second, "vector") == []
        assert (await sources(second, "hybrid"))[0] == "refunds.md"  # the keyword ranking carries it
        assert await second.differences() == {}  # a stale collection is its job's, not a gap to report
        # A document ingested meanwhile is embedded with the new model and searchable by vector at once.
        await second.ingest_text(ORG, "docs", "more.md", "Refunds are issued within 14 days of a purchase.")
        assert await sources(second, "vector") == ["more.md"]
        assert await recorded(second, "docs") == ("model-a", 64)  # until the job is done

        seen: list[float] = []

        async def progress(fraction: float) -> None:
            seen.append(fraction)

        reembed.BATCH, saved = 2, reembed.BATCH
        try:
            done = await reembed.reembed_collection(second, ORG, "docs", progress)
        finally:
            reembed.BATCH = saved
        assert done == 4 and seen == sorted(seen) and len(seen) == 2 and seen[-1] == pytest.approx(0.99)
        assert await recorded(second, "docs") == ("model-b", 128)
        assert second.reindexing == set() and await reembed.stale(second.db, "model-b", 128) == set()
        async with second.db.tenant_session(ORG) as session:
            chunks = list(await session.scalars(select(Chunk).where(Chunk.org_id == ORG)))
        stored = np.stack([np.frombuffer(chunk.embedding, dtype=np.float32) for chunk in chunks])
        np.testing.assert_allclose(stored, new.embed_sync([chunk.text for chunk in chunks]), atol=1e-6)
        assert await second.index.ids(ORG, "docs") == {chunk.id for chunk in chunks}
        assert set((await sources(second, "vector"))[:2]) == {"refunds.md", "more.md"}

    # Back to model A: a stale collection again, in the other direction.
    async with service(database_url, tmp_path / "index", old) as third:
        assert third.reindexing == {(ORG, "docs")}
        await reembed.reembed_collection(third, ORG, "docs")
        assert await recorded(third, "docs") == ("model-a", 64)
        assert (await sources(third, "vector"))[0] in {"refunds.md", "more.md"}


async def test_collections_without_a_recorded_model_are_adopted_by_the_width_of_their_vectors(
        database_url: str, tmp_path: Path) -> None:
    await anyio.to_thread.run_sync(upgrade, database_url)
    async with service(database_url, tmp_path / "index", HashEmbedder(64, name="model-a")) as first:
        async with first.db.system_session() as session:
            session.add(Organization(id=ORG, name="a"))
        await first.ingest_text(ORG, "docs", "refunds.md", DOCS["refunds.md"])
        await first.ingest_text(ORG, "pets", "cats.txt", DOCS["cats.txt"])
        async with first.db.system_session() as session:  # as made before migration 0016
            await session.execute(update(Collection).values(embedding_model=None, embedding_dimensions=None))
    async with service(database_url, tmp_path / "index", HashEmbedder(64, name="model-c")) as same_width:
        # Vectors of the configured width are taken as the configured model's: nothing to re-embed.
        assert same_width.reindexing == set()
        assert await recorded(same_width, "docs") == ("model-c", 64)
        async with same_width.db.system_session() as session:
            await session.execute(update(Collection).values(embedding_model=None, embedding_dimensions=None))
    async with service(database_url, tmp_path / "index", HashEmbedder(128, name="model-b")) as wider:
        assert wider.reindexing == {(ORG, "docs"), (ORG, "pets")}
        assert await recorded(wider, "pets") == (reembed.UNKNOWN_MODEL, 64)


async def test_old_vectors_of_the_same_width_are_never_compared_with_new_queries(
        database_url: str, tmp_path: Path) -> None:
    await anyio.to_thread.run_sync(upgrade, database_url)
    async with service(database_url, tmp_path / "index", HashEmbedder(64, name="model-a")) as first:
        async with first.db.system_session() as session:
            session.add(Organization(id=ORG, name="a"))
        await first.ingest_text(ORG, "docs", "refunds.md", DOCS["refunds.md"])
        assert await sources(first, "vector") == ["refunds.md"]
    async with service(database_url, tmp_path / "index", HashEmbedder(64, name="model-d")) as second:
        assert second.reindexing == {(ORG, "docs")}
        assert await sources(second, "vector") == []
        assert await sources(second, "hybrid") == ["refunds.md"]
        await reembed.reembed_collection(second, ORG, "docs")
        assert await sources(second, "vector") == ["refunds.md"]
