"""The KeywordSearch backends (port: ``knowledge/ports.py``): SQLite FTS5 (embedded) and PostgreSQL full text
(scale profile).

User text is never passed to the engine's query language as is: it is reduced to word tokens OR-ed
together, so quotes, operators and stray syntax cannot break or widen a query.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.knowledge.filters import SearchFilters
from atrium.knowledge.filters import sql as filter_sql

_WORD = re.compile(r"\w+", re.UNICODE)
MAX_TERMS = 32


def query_terms(query: str) -> list[str]:
    """Distinct lower-cased word tokens of ``query`` (at most ``MAX_TERMS``), in order."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(query.lower()):
        if len(word) > 1 or word.isdigit():
            seen.setdefault(word, None)
    return list(seen)[:MAX_TERMS]


def prune_terms(terms: Sequence[str], postings: Sequence[int], budget: int) -> list[str]:
    """The terms worth ranking by when BM25 may score at most about ``budget`` rows: rarest first, each kept
    while the kept terms' posting lists (rows matching each) add up to at most ``budget``; the rarest term is
    always kept. In the query's order. The dropped ones are the commonest, whose BM25 weight (IDF) is lowest
    and whose rows cost the most: FTS5 scores every row matching any term of an OR query."""
    kept: set[int] = set()
    total = 0
    for i in sorted(range(len(terms)), key=lambda i: (postings[i], i)):
        if kept and total + postings[i] > budget:
            continue
        kept.add(i)
        total += postings[i]
    return [term for i, term in enumerate(terms) if i in kept]


def _fts_phrase(term: str) -> str:
    return '"' + term.replace('"', "") + '"'


class SqliteKeywordSearch:
    """FTS5 with BM25 over the ``chunks_fts`` external-content table kept in sync by triggers.

    FTS5 computes BM25 for every row matching the OR of the query's terms before it can sort, so a query with
    a common word costs time in proportion to the corpus (about 300 ms at 100k chunks on one core). With
    ``max_postings`` (knowledge.keyword_max_postings), the commonest terms are dropped until the kept terms
    match at most that many rows (``prune_terms``). Each term's row count is counted once and remembered for
    ``postings_ttl_s`` seconds (counts are over the whole index: they only steer the cost, never what a tenant
    sees)."""

    def __init__(self, max_postings: int | None = None, postings_ttl_s: float = 60.0,
                 cache_size: int = 50_000) -> None:
        self.max_postings = max_postings
        self.postings_ttl_s = postings_ttl_s
        self.cache_size = cache_size
        self._postings: dict[str, tuple[float, int]] = {}

    async def _posting_counts(self, session: AsyncSession, terms: Sequence[str]) -> list[int]:
        now = time.monotonic()
        missing = [t for t in terms if (hit := self._postings.get(t)) is None or now - hit[0] > self.postings_ttl_s]
        if missing:
            sql = "SELECT " + ", ".join(
                f"(SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH :t{i})" for i in range(len(missing)))
            row = (await session.execute(text(sql), {f"t{i}": _fts_phrase(t) for i, t in enumerate(missing)})).one()
            if len(self._postings) + len(missing) > self.cache_size:
                self._postings.clear()
            for term, count in zip(missing, row, strict=True):
                self._postings[term] = (now, int(count))
        return [self._postings[t][1] for t in terms]

    async def search(self, session: AsyncSession, tenant: str, collections: Sequence[str] | None,
                     query: str, limit: int, filters: SearchFilters | None = None) -> list[tuple[int, float]]:
        terms = query_terms(query)
        if not terms:
            return []
        if self.max_postings is not None and len(terms) > 1:
            terms = prune_terms(terms, await self._posting_counts(session, terms), self.max_postings)
        match = " OR ".join(_fts_phrase(term) for term in terms)
        sql = (
            # INDEXED BY: the tenant and collection of each match come from the covering index (migration
            # 0016), not from the table's rows, which carry the text and the embedding.
            "SELECT c.id, bm25(chunks_fts) AS rank FROM chunks_fts "
            "JOIN chunks c INDEXED BY ix_chunks_id_org_collection ON c.id = chunks_fts.rowid "
            "WHERE chunks_fts MATCH :match AND c.org_id = :org"
        )
        rows = await _ranked(session, sql, " ORDER BY rank LIMIT :limit", collections,
                             {"match": match, "org": tenant, "limit": limit}, filters)
        # bm25() is lower-is-better; flip it so every searcher returns higher-is-better.
        return [(chunk_id, -rank) for chunk_id, rank in rows]


class PostgresKeywordSearch:
    """PostgreSQL full text: the generated ``chunks.tsv`` column with a GIN index, ranked by ts_rank_cd."""

    async def search(self, session: AsyncSession, tenant: str, collections: Sequence[str] | None,
                     query: str, limit: int, filters: SearchFilters | None = None) -> list[tuple[int, float]]:
        terms = query_terms(query)
        if not terms:
            return []
        sql = (
            "SELECT c.id, ts_rank_cd(c.tsv, q) AS rank FROM chunks c, "
            "to_tsquery('english', :tsquery) q WHERE c.tsv @@ q AND c.org_id = :org"
        )
        return await _ranked(session, sql, " ORDER BY rank DESC, c.id LIMIT :limit", collections,
                             {"tsquery": " | ".join(terms), "org": tenant, "limit": limit}, filters)


async def _ranked(session: AsyncSession, sql: str, order: str, collections: Sequence[str] | None,
                  params: dict[str, object], filters: SearchFilters | None) -> list[tuple[int, float]]:
    """The (chunk id, rank) rows of ``sql``, narrowed to ``collections`` (None: every collection) and to the
    documents ``filters`` match, and ordered by ``order``."""
    condition, binds, values = filter_sql(filters)
    sql += condition
    params = {**params, **values}
    if collections is not None:
        sql += " AND c.collection IN :collections"
        binds.append(bindparam("collections", expanding=True))
        params["collections"] = list(collections)
    rows = await session.execute(text(sql + order).bindparams(*binds), params)
    return [(int(row[0]), float(row[1])) for row in rows]
