"""``PgVectorIndex.ensure_schema`` run by several processes at once on a fresh PostgreSQL database (what
``atrium serve --workers 2`` does at start-up, each worker in its own lifespan): every one succeeds and the
table ends up made once, with its HNSW index and tenant policy. Each caller has its own engine (its own
connections), as separate processes would."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from atrium.knowledge.vector.pgvector import PgVectorIndex
from atrium.store.engine import Database, build_engine

pytestmark = pytest.mark.integration
DIM = 16


@pytest.mark.parametrize("callers", [2, 4])
async def test_concurrent_ensure_schema_on_a_fresh_database(postgres_url: str, callers: int) -> None:
    indexes = [PgVectorIndex(Database(build_engine(postgres_url)), DIM) for _ in range(callers)]
    try:
        await asyncio.gather(*(index.ensure_schema() for index in indexes))
        async with indexes[0].db.system_session() as session:
            made = (await session.execute(text(
                "SELECT c.relrowsecurity, c.relforcerowsecurity, "
                "(SELECT count(*) FROM pg_indexes WHERE tablename = :table AND indexname = :table || '_hnsw') "
                "FROM pg_class c WHERE c.oid = to_regclass(:table)"), {"table": indexes[0].table})).one()
        assert tuple(made) == (True, True, 1)
    finally:
        for index in indexes:
            await index.db.dispose()
