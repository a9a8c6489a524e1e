"""A knowledge service over a migrated database URL, as one process start builds it: HNSW and FTS5 on SQLite,
pgvector and PostgreSQL full text on PostgreSQL. Shared by the service-level integration tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio

from atrium.gateway.ports import Embedder
from atrium.knowledge.keyword import PostgresKeywordSearch, SqliteKeywordSearch
from atrium.knowledge.ports import KeywordSearch, VectorIndex
from atrium.knowledge.rerank import EmbeddingReranker
from atrium.knowledge.service import KnowledgeService
from atrium.knowledge.settings import KnowledgeSettings
from atrium.knowledge.vector.hnsw import HnswVectorIndex
from atrium.knowledge.vector.pgvector import PgVectorIndex
from atrium.store.engine import Database, build_engine


@contextlib.asynccontextmanager
async def knowledge_service(url: str, index_dir: Path, embedder: Embedder, settings: KnowledgeSettings, *,
                            reranker: EmbeddingReranker | None = None,
                            cache: Callable[[Database, Embedder], Embedder] | None = None,
                            ) -> AsyncIterator[KnowledgeService]:
    """The service reconciled at start; its index saved and its database closed at the end. ``cache``: wraps
    ``embedder`` in a cache kept in the service's database (as the container's ``cached_embedder`` does)."""
    db = Database(build_engine(url))
    index: VectorIndex
    keyword: KeywordSearch
    if db.is_sqlite:
        index = await anyio.to_thread.run_sync(lambda: HnswVectorIndex(index_dir, embedder.dimensions))
        keyword = SqliteKeywordSearch()
    else:
        index = PgVectorIndex(db, embedder.dimensions)
        await index.ensure_schema()
        keyword = PostgresKeywordSearch()
    knowledge = KnowledgeService(db, cache(db, embedder) if cache is not None else embedder, index, keyword, settings,
                                 reranker=reranker)
    try:
        await knowledge.reconcile()
        yield knowledge
        await knowledge.save_index(force=True)
    finally:
        await db.dispose()
