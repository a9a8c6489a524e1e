"""Metadata filters of a search: a document's source (exact, or a prefix when it ends with ``*``), its type
(``pdf``, ``html``, ``md``, ...), and when it was created.

Filters only ever narrow a search: they are applied inside the collections the caller may read, never in
place of them. The keyword search adds them to its SQL (``sql``). The vector index knows nothing of
documents, so the vector ranking is filtered against the database (``vector_ranking``): when few chunks
match (at most ``EXACT_LIMIT``), they are ranked exactly from their stored vectors, so a filter that leaves
out most of the index still finds the best of what is left; otherwise the index is asked for more and more
candidates until enough of them match or it has no more.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sqlalchemy import DateTime, bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import BindParameter

from atrium.gateway.ports import Vectors
from atrium.knowledge import repository as repo
from atrium.knowledge.ports import SearchFilters, VectorIndex

__all__ = ["SearchFilters", "matching_ids", "sql", "vector_ranking"]

EXACT_LIMIT = 5000
AMONG_BATCH = 10_000


def sql(filters: SearchFilters | None) -> tuple[str, list[BindParameter[object]], dict[str, object]]:
    """The condition on a chunk ``c`` (``AND ...``, empty without filters), its typed bind parameters and
    their values."""
    if filters is None or filters.empty:
        return "", [], {}
    conditions = ["d.id = c.document_id", "d.org_id = c.org_id"]
    binds: list[BindParameter[object]] = []
    values: dict[str, object] = {}
    if filters.source is not None:
        if filters.source_prefix:  # substr, not LIKE: exact and case-sensitive on both databases
            conditions.append("substr(d.source, 1, :f_source_len) = :f_source")
            values["f_source_len"] = len(filters.source)
        else:
            conditions.append("d.source = :f_source")
        values["f_source"] = filters.source
    if filters.types is not None:
        conditions.append("d.file_type IN :f_types")
        binds.append(bindparam("f_types", expanding=True))
        values["f_types"] = list(filters.types)
    for name, operator, moment in (("f_after", ">=", filters.created_after),
                                   ("f_before", "<", filters.created_before)):
        if moment is not None:
            conditions.append(f"d.created_at {operator} :{name}")
            # typed, so SQLite compares it in the format the column is stored in
            binds.append(bindparam(name, type_=DateTime(timezone=True)))
            values[name] = moment
    return " AND EXISTS (SELECT 1 FROM documents d WHERE " + " AND ".join(conditions) + ")", binds, values


async def matching_ids(session: AsyncSession, tenant: str, collections: Sequence[str] | None,
                       filters: SearchFilters, *, among: Sequence[int] | None = None,
                       limit: int | None = None) -> list[int]:
    """Ids of the tenant's chunks in ``collections`` (None: all) whose document matches ``filters``:
    of ``among`` only when given, at most ``limit``."""
    condition, binds, values = sql(filters)
    statement = "SELECT c.id FROM chunks c WHERE c.org_id = :org" + condition
    params: dict[str, object] = {"org": tenant, **values}
    if collections is not None:
        statement += " AND c.collection IN :collections"
        binds.append(bindparam("collections", expanding=True))
        params["collections"] = list(collections)
    if among is not None:  # in batches: the databases bound how many parameters one statement takes
        statement += " AND c.id IN :among"
        binds.append(bindparam("among", expanding=True))
        found: list[int] = []
        for start in range(0, len(among), AMONG_BATCH):
            params["among"] = list(among[start:start + AMONG_BATCH])
            found.extend(int(row[0]) for row in await session.execute(text(statement).bindparams(*binds), params))
        return found
    if limit is not None:
        statement += " ORDER BY c.id LIMIT :limit"
        params["limit"] = limit
    rows = await session.execute(text(statement).bindparams(*binds), params)
    return [int(row[0]) for row in rows]


async def vector_ranking(session: AsyncSession, index: VectorIndex, tenant: str,
                         collections: Sequence[str] | None, filters: SearchFilters, vector: Vectors,
                         depth: int) -> dict[int, float]:
    """The best ``depth`` chunks matching ``filters`` for ``vector``, with their cosine scores."""
    few = await matching_ids(session, tenant, collections, filters, limit=EXACT_LIMIT + 1)
    if len(few) <= EXACT_LIMIT:
        return await _exact(session, tenant, few, vector, depth, index.dimensions)
    asked = depth * 4
    while True:
        hits = await index.search(tenant, collections, vector, asked)
        kept = set(await matching_ids(session, tenant, collections, filters, among=[hit.id for hit in hits]))
        ranked = {hit.id: hit.score for hit in hits if hit.id in kept}
        if len(ranked) >= depth or len(hits) < asked:
            return dict(sorted(ranked.items(), key=lambda item: -item[1])[:depth])
        asked *= 4


async def _exact(session: AsyncSession, tenant: str, ids: Sequence[int], vector: Vectors, depth: int,
                 dimensions: int) -> dict[int, float]:
    scores: dict[int, float] = {}
    query = np.asarray(vector, dtype=np.float32).reshape(-1)
    async for batch_ids, vectors in repo.iter_embeddings(session, tenant, ids, dimensions):
        for chunk_id, score in zip(batch_ids, vectors @ query, strict=True):
            scores[chunk_id] = float(score)
    return dict(sorted(scores.items(), key=lambda item: -item[1])[:depth])
