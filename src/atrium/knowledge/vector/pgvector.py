"""PgVectorIndex: the VectorIndex port on PostgreSQL + pgvector, with an HNSW index (cosine).

The table is made by the adapter (``ensure_schema``) because its column type carries the embedding
dimension, which is a setting: one table per dimension, ``atrium_vectors_<dims>``. Tenant and collection
are columns, and every statement filters on the tenant it is given; the table is under Row-Level Security
on its ``tenant`` column like every tenant table, and every statement runs in that tenant's scope.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import text

from atrium.gateway.ports import Vectors
from atrium.knowledge.ports import VectorHit
from atrium.knowledge.vector.common import check_batch, check_ids, check_name, check_query, normalise_rows
from atrium.store.engine import Database
from atrium.store.tenancy import rls_statements

log = logging.getLogger(__name__)


def _literal(vector: Sequence[float]) -> str:
    return "[" + ",".join(f"{value:.7g}" for value in vector) + "]"


class PgVectorIndex:
    """Vectors in PostgreSQL. ``ef_search`` is raised to at least ``limit`` per query, as in the HNSW adapter;
    ``save`` is a no-op (every write is committed)."""

    def __init__(self, db: Database, dimensions: int, *, m: int = 16, ef_construction: int = 64,
                 ef_search: int = 64) -> None:
        self.db = db
        self.dimensions = dimensions
        self.table = f"atrium_vectors_{int(dimensions)}"
        self.m = m
        self.ef_construction = ef_construction
        self.ef_search = ef_search

    async def ensure_schema(self, owner: Database | None = None) -> None:
        """Create the table, its HNSW index and its tenant policy if missing, connected as ``owner`` (the
        migration role, when the application runs as a role that may not create extensions or tables).
        An existing table only gets the policy if it lacks one (when this role owns it; else a warning)."""
        async with (owner or self.db).system_session() as session:
            # Processes starting together (``atrium serve --workers N``) each run this on a fresh database:
            # ``IF NOT EXISTS`` is not safe against a concurrent creator (a unique violation on
            # pg_extension or pg_class), so they take turns; the lock ends with the transaction.
            await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"),
                                  {"name": f"atrium.ensure_schema.{self.table}"})
            state = (await session.execute(text(
                "SELECT pg_has_role(c.relowner, 'USAGE'), c.relrowsecurity AND c.relforcerowsecurity "
                "FROM pg_class c WHERE c.oid = to_regclass(:table)"), {"table": self.table})).first()
            if state is not None and state[1]:
                return  # made before, policy and all
            if state is not None and not state[0]:
                log.warning("%s has no Row-Level Security and this role cannot add it: run the application "
                            "once with migration_database_url set", self.table)
                return
            await session.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
            await session.execute(text(
                f"CREATE TABLE IF NOT EXISTS {self.table} (tenant text NOT NULL, collection text NOT NULL, "
                f"id bigint NOT NULL, embedding vector({self.dimensions}) NOT NULL, "
                "PRIMARY KEY (tenant, collection, id))"))
            await session.execute(text(
                f"CREATE INDEX IF NOT EXISTS {self.table}_hnsw ON {self.table} USING hnsw "
                f"(embedding vector_cosine_ops) WITH (m = {int(self.m)}, "
                f"ef_construction = {int(self.ef_construction)})"))
            for statement in rls_statements(self.table, "tenant"):
                await session.execute(text(statement))

    async def add(self, tenant: str, collection: str, ids: Sequence[int], vectors: Vectors) -> None:
        check_name("tenant", tenant)
        check_name("collection", collection)
        id_array, matrix = check_batch(ids, vectors, self.dimensions)
        if not len(id_array):
            return
        rows = [{"tenant": tenant, "collection": collection, "id": int(i), "embedding": _literal(v)}
                for i, v in zip(id_array.tolist(), normalise_rows(matrix).tolist(), strict=True)]
        async with self.db.tenant_session(tenant) as session:
            await session.execute(text(
                f"INSERT INTO {self.table} (tenant, collection, id, embedding) "
                "VALUES (:tenant, :collection, :id, CAST(:embedding AS vector)) "
                "ON CONFLICT (tenant, collection, id) DO UPDATE SET embedding = EXCLUDED.embedding"), rows)

    async def delete(self, tenant: str, collection: str, ids: Sequence[int]) -> None:
        id_list = check_ids(ids)
        if not id_list:
            return
        async with self.db.tenant_session(tenant) as session:
            await session.execute(text(
                f"DELETE FROM {self.table} WHERE tenant = :tenant AND collection = :collection "
                "AND id = ANY(:ids)"), {"tenant": tenant, "collection": collection, "ids": id_list})

    async def search(self, tenant: str, collections: Sequence[str] | None, vector: Vectors,
                     limit: int) -> list[VectorHit]:
        check_name("tenant", tenant)
        query = normalise_rows(check_query(vector, self.dimensions))
        if limit <= 0 or (collections is not None and not collections):
            return []
        where = "tenant = :tenant" + ("" if collections is None else " AND collection = ANY(:collections)")
        params: dict[str, object] = {"tenant": tenant, "query": _literal(query.tolist()), "limit": int(limit)}
        if collections is not None:
            params["collections"] = list(collections)
        async with self.db.tenant_session(tenant) as session:
            await session.execute(text(f"SET LOCAL hnsw.ef_search = {max(int(self.ef_search), int(limit))}"))
            rows = await session.execute(text(
                f"SELECT id, 1 - (embedding <=> CAST(:query AS vector)) AS score FROM {self.table} "
                f"WHERE {where} ORDER BY embedding <=> CAST(:query AS vector) LIMIT :limit"), params)
            return [VectorHit(id=int(row[0]), score=float(row[1])) for row in rows]

    async def ids(self, tenant: str, collection: str) -> set[int]:
        async with self.db.tenant_session(tenant) as session:
            rows = await session.scalars(text(
                f"SELECT id FROM {self.table} WHERE tenant = :tenant AND collection = :collection"),
                {"tenant": tenant, "collection": collection})
            return {int(i) for i in rows}

    async def collections(self, tenant: str) -> list[str]:
        async with self.db.tenant_session(tenant) as session:
            rows = await session.scalars(text(
                f"SELECT DISTINCT collection FROM {self.table} WHERE tenant = :tenant ORDER BY collection"),
                {"tenant": tenant})
            return list(rows)

    async def save(self) -> None:
        return None
