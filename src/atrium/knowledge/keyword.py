"""The KeywordSearch backends (port: ``knowledge/ports.py``): SQLite FTS5 (embedded) and PostgreSQL full text
(scale profile).

User text is never passed to the engine's query language as is: it is reduced to word tokens OR-ed
together, so quotes, operators and stray syntax cannot break or widen a query.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

_WORD = re.compile(r"\w+", re.UNICODE)
MAX_TERMS = 32


def query_terms(query: str) -> list[str]:
    """Distinct lower-cased word tokens of ``query`` (at most ``MAX_TERMS``), in order."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(query.lower()):
        if len(word) > 1 or word.isdigit():
            seen.setdefault(word, None)
    return list(seen)[:MAX_TERMS]


class SqliteKeywordSearch:
    """FTS5 with BM25 over the ``chunks_fts`` external-content table kept in sync by triggers."""

    async def search(self, session: AsyncSession, tenant: str, collections: Sequence[str] | None,
                     query: str, limit: int) -> list[tuple[int, float]]:
        terms = query_terms(query)
        if not terms:
            return []
        match = " OR ".join('"' + term.replace('"', "") + '"' for term in terms)
        sql = (
            "SELECT c.id, bm25(chunks_fts) AS rank FROM chunks_fts JOIN chunks c ON c.id = chunks_fts.rowid "
            "WHERE chunks_fts MATCH :match AND c.org_id = :org"
        )
        rows = await _ranked(session, sql, " ORDER BY rank LIMIT :limit", collections,
                             {"match": match, "org": tenant, "limit": limit})
        # bm25() is lower-is-better; flip it so every searcher returns higher-is-better.
        return [(chunk_id, -rank) for chunk_id, rank in rows]


class PostgresKeywordSearch:
    """PostgreSQL full text: the generated ``chunks.tsv`` column with a GIN index, ranked by ts_rank_cd."""

    async def search(self, session: AsyncSession, tenant: str, collections: Sequence[str] | None,
                     query: str, limit: int) -> list[tuple[int, float]]:
        terms = query_terms(query)
        if not terms:
            return []
        sql = (
            "SELECT c.id, ts_rank_cd(c.tsv, q) AS rank FROM chunks c, "
            "to_tsquery('english', :tsquery) q WHERE c.tsv @@ q AND c.org_id = :org"
        )
        return await _ranked(session, sql, " ORDER BY rank DESC, c.id LIMIT :limit", collections,
                             {"tsquery": " | ".join(terms), "org": tenant, "limit": limit})


async def _ranked(session: AsyncSession, sql: str, order: str, collections: Sequence[str] | None,
                  params: dict[str, object]) -> list[tuple[int, float]]:
    """The (chunk id, rank) rows of ``sql``, narrowed to ``collections`` (None: every collection) and
    ordered by ``order``."""
    if collections is None:
        rows = await session.execute(text(sql + order), params)
    else:
        statement = text(sql + " AND c.collection IN :collections" + order)
        statement = statement.bindparams(bindparam("collections", expanding=True))
        rows = await session.execute(statement, {**params, "collections": list(collections)})
    return [(int(row[0]), float(row[1])) for row in rows]
