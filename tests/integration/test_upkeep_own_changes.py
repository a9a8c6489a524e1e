"""Index upkeep after this process's own ingestion (knowledge/service.py): a document ingested here is
already in this process's index, so the upkeep loop does not reconcile every collection for it (a pass
over every chunk id on the event loop after each document, what slowed /health during ingestion); a
change by another process still triggers a reconciliation that brings its chunks into this index."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from atrium.knowledge.embedders.fake import HashEmbedder
from atrium.knowledge.keyword import PostgresKeywordSearch, SqliteKeywordSearch
from atrium.knowledge.ports import KeywordSearch, VectorIndex
from atrium.knowledge.service import KnowledgeService
from atrium.knowledge.settings import KnowledgeSettings
from atrium.knowledge.vector.hnsw import HnswVectorIndex
from atrium.knowledge.vector.pgvector import PgVectorIndex
from atrium.store.engine import Database, build_engine
from atrium.store.migrate import upgrade
from atrium.store.models import Organization

pytestmark = pytest.mark.integration
ORG = "org-a"


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    url = (f"sqlite+aiosqlite:///{tmp_path / 'atrium.db'}" if request.param == "sqlite"
           else str(request.getfixturevalue("postgres_url")))
    await anyio.to_thread.run_sync(upgrade, url)
    return url


async def service(db: Database) -> KnowledgeService:
    embedder = HashEmbedder(dimensions=64)
    index: VectorIndex
    keyword: KeywordSearch
    if db.is_sqlite:
        index, keyword = HnswVectorIndex(None, 64), SqliteKeywordSearch()
    else:
        pg = PgVectorIndex(db, 64)
        await pg.ensure_schema()
        index, keyword = pg, PostgresKeywordSearch()
    knowledge = KnowledgeService(db, embedder, index, keyword, KnowledgeSettings(min_relevance=0.0))
    await knowledge.reconcile()
    return knowledge


async def test_own_ingestion_needs_no_reconcile_but_another_process_s_does(database_url: str) -> None:
    here_db, there_db = Database(build_engine(database_url)), Database(build_engine(database_url))
    try:
        async with here_db.system_session() as session:
            session.add(Organization(id=ORG, name="A"))
        here, there = await service(here_db), await service(there_db)
        await here.ingest_text(ORG, "docs", "a.md", "Refunds are issued within 14 days.")
        await here.ingest_text(ORG, "docs", "b.md", "Invoices are emailed monthly.")
        assert not await here.changed_elsewhere()
        assert await here.differences() == {}

        await there.ingest_text(ORG, "docs", "c.md", "The helm chart deploys three replicas.")
        await here.ingest_text(ORG, "docs", "d.md", "Cats sleep sixteen hours a day.")
        assert await here.changed_elsewhere()  # c.md is not in this index yet
        report = await here.reconcile()
        if here_db.is_sqlite:  # pgvector: one shared index, nothing to add
            assert report.added == 1
        assert not await here.changed_elsewhere()
        assert await here.differences() == {}
    finally:
        await here_db.dispose()
        await there_db.dispose()
