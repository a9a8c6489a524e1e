"""The embedding cache: an ``Embedder`` wrapper that remembers vectors, so a text already embedded by the
same model is never embedded again.

Documents: a persistent store keyed by (tenant, model fingerprint, sha256 of the text), the
``embedding_cache`` table of the database (SQLite in the embedded default, PostgreSQL in the scale profile,
where every replica and worker shares it). Queries: a bounded in-memory LRU per process, keyed by (tenant,
text): questions repeat within minutes, and a query vector is not worth a database round trip.

Entries are per tenant, never shared across tenants: a shared entry would tell one tenant, by how fast a
text is embedded, whether another tenant holds it. So the wrapper caches only through ``for_tenant``;
``embed`` on the wrapper itself passes straight through.

The model fingerprint (``factory.model_fingerprint``) covers the model's name, its file and every setting
that shapes a vector (dimensions, pooling, normalisation, truncation, query prefix): a change of model reads
none of the old model's entries; ``prune`` deletes them.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from cachetools import LRUCache
from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite

from atrium.gateway.ports import Embedder, EmbedKind, Vectors
from atrium.store.engine import Database
from atrium.store.models import EmbeddingCacheEntry

log = logging.getLogger(__name__)

_LOOKUP_BATCH = 500  # hashes per query (SQLite's bound-parameter limit is 32,766; PostgreSQL's 32,767)


class VectorStore(Protocol):
    """Vectors (float32 bytes) by tenant, model fingerprint and text hash."""

    async def get_many(self, tenant: str, model: str, hashes: Sequence[str]) -> dict[str, bytes]: ...

    async def put_many(self, tenant: str, model: str, vectors: Mapping[str, bytes]) -> None: ...

    async def delete_many(self, tenant: str, model: str, hashes: Sequence[str]) -> None: ...


class SqlVectorStore:
    """``VectorStore`` adapter over the ``embedding_cache`` table (SQLite or PostgreSQL, under the tenant's
    row-level security). A write is its own short transaction: it never holds the ingestion's."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get_many(self, tenant: str, model: str, hashes: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        async with self.db.tenant_session(tenant) as session:
            for start in range(0, len(hashes), _LOOKUP_BATCH):
                rows = await session.execute(
                    select(EmbeddingCacheEntry.text_hash, EmbeddingCacheEntry.vector).where(
                        EmbeddingCacheEntry.org_id == tenant, EmbeddingCacheEntry.model == model,
                        EmbeddingCacheEntry.text_hash.in_(hashes[start:start + _LOOKUP_BATCH])))
                found.update({text_hash: bytes(vector) for text_hash, vector in rows})
        return found

    async def put_many(self, tenant: str, model: str, vectors: Mapping[str, bytes]) -> None:
        if not vectors:
            return
        insert = sqlite.insert if self.db.is_sqlite else postgresql.insert
        rows = [{"org_id": tenant, "model": model, "text_hash": text_hash, "vector": vector}
                for text_hash, vector in vectors.items()]
        async with self.db.tenant_session(tenant) as session:
            for start in range(0, len(rows), _LOOKUP_BATCH):
                # Another process may have stored the same text meanwhile: same model, same vector.
                await session.execute(insert(EmbeddingCacheEntry).on_conflict_do_nothing(),
                                      rows[start:start + _LOOKUP_BATCH])

    async def delete_many(self, tenant: str, model: str, hashes: Sequence[str]) -> None:
        async with self.db.tenant_session(tenant) as session:
            for start in range(0, len(hashes), _LOOKUP_BATCH):
                await session.execute(delete(EmbeddingCacheEntry).where(
                    EmbeddingCacheEntry.org_id == tenant, EmbeddingCacheEntry.model == model,
                    EmbeddingCacheEntry.text_hash.in_(hashes[start:start + _LOOKUP_BATCH])))

    async def prune(self, keep_model: str) -> int:
        """Delete every tenant's entries of models other than ``keep_model`` (a system session)."""
        async with self.db.system_session() as session:
            result = await session.execute(delete(EmbeddingCacheEntry).where(EmbeddingCacheEntry.model != keep_model))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(slots=True)
class CacheStats:
    """Texts answered from the cache (``hits``) and by the model (``misses``), over every tenant's view."""

    hits: int = 0
    misses: int = 0


class CachingEmbedder:
    """Embedder wrapper: ``for_tenant(tenant)`` is the same port with a cache in front of ``inner``.

    Document texts are looked up in ``store`` by (tenant, ``fingerprint``, sha256); the misses, each distinct
    text once, go to ``inner`` in one call, and are stored. Query texts go through an LRU of
    ``query_cache_size`` vectors (0: no query cache). ``stats`` counts texts, shared by every view.
    """

    def __init__(self, inner: Embedder, store: VectorStore, *, fingerprint: str, query_cache_size: int = 1024,
                 tenant: str | None = None, _queries: LRUCache[tuple[str, str], Vectors] | None = None,
                 _stats: CacheStats | None = None) -> None:
        self.inner = inner
        self.store = store
        self.fingerprint = fingerprint
        self.name: str = inner.name
        self.dimensions: int = inner.dimensions
        self.tenant = tenant
        self.query_cache_size = query_cache_size
        self._queries: LRUCache[tuple[str, str], Vectors] | None = _queries if _queries is not None else (
            LRUCache(maxsize=query_cache_size) if query_cache_size > 0 else None)
        self.stats = _stats if _stats is not None else CacheStats()
        max_input = getattr(inner, "max_input_tokens", None)
        if max_input is not None:
            self.max_input_tokens = max_input
        count_many = getattr(inner, "count_tokens_many", None)
        if count_many is not None:
            self.count_tokens_many = count_many

    def for_tenant(self, tenant: str) -> CachingEmbedder:
        """The cache of ``tenant``'s vectors in front of the same model (shares the model and the LRU)."""
        scoped = CachingEmbedder(self.inner, self.store, fingerprint=self.fingerprint,
                                 query_cache_size=self.query_cache_size, tenant=tenant, _queries=self._queries,
                                 _stats=self.stats)
        return scoped

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    async def embed(self, texts: Sequence[str], *, kind: EmbedKind = "document") -> Vectors:
        """Vectors of ``texts`` in order; cached only in a tenant's view (``for_tenant``)."""
        if self.tenant is None or not texts:
            return await self.inner.embed(texts, kind=kind)
        if kind == "query":
            return await self._embed_queries(self.tenant, texts)
        return await self._embed_documents(self.tenant, texts)

    async def _embed_queries(self, tenant: str, texts: Sequence[str]) -> Vectors:
        if self._queries is None:
            return await self.inner.embed(texts, kind="query")
        found = {text: vector for text in dict.fromkeys(texts)
                 if (vector := self._queries.get((tenant, text))) is not None}
        missing = [text for text in dict.fromkeys(texts) if text not in found]
        self.stats.hits += len(texts) - len(missing)
        self.stats.misses += len(missing)
        if missing:
            vectors = await self.inner.embed(missing, kind="query")
            for text, vector in zip(missing, vectors, strict=True):
                vector.setflags(write=False)  # shared by every later caller
                self._queries[(tenant, text)] = vector
                found[text] = vector
        return np.stack([found[text] for text in texts])

    async def _embed_documents(self, tenant: str, texts: Sequence[str]) -> Vectors:
        hashes = [text_hash(text) for text in texts]
        by_hash = dict(zip(hashes, texts, strict=True))
        cached = await self._read(tenant, list(by_hash))
        missing = [h for h in by_hash if h not in cached]
        self.stats.hits += sum(1 for h in hashes if h in cached)
        self.stats.misses += len(missing)
        if missing:
            vectors = await self.inner.embed([by_hash[h] for h in missing])
            fresh = {h: np.ascontiguousarray(vector, dtype=np.float32) for h, vector in zip(missing, vectors,
                                                                                          strict=True)}
            cached.update(fresh)
            await self._write(tenant, {h: vector.tobytes() for h, vector in fresh.items()})
        return np.stack([cached[h] for h in hashes]).astype(np.float32, copy=False)

    async def forget(self, texts: Sequence[str]) -> None:
        """Delete the tenant's cached vectors of ``texts`` (their documents were deleted or changed): the
        cache never outlives the content it was made from (erasure). A text another document still holds
        is only embedded again if it is ingested again."""
        if self.tenant is None or not texts:
            return
        try:
            await self.store.delete_many(self.tenant, self.fingerprint, sorted({text_hash(text) for text in texts}))
        except Exception:
            log.warning("embedding cache entries not deleted", exc_info=True)

    async def _read(self, tenant: str, hashes: list[str]) -> dict[str, np.ndarray]:
        try:
            stored = await self.store.get_many(tenant, self.fingerprint, hashes)
        except Exception:  # a cache that cannot be read costs time, never an ingestion
            log.warning("embedding cache unreadable; embedding every text", exc_info=True)
            return {}
        width = self.dimensions * 4
        return {h: np.frombuffer(raw, dtype=np.float32) for h, raw in stored.items() if len(raw) == width}

    async def _write(self, tenant: str, vectors: Mapping[str, bytes]) -> None:
        try:
            await self.store.put_many(tenant, self.fingerprint, vectors)
        except Exception:
            log.warning("embedding cache not written", exc_info=True)


async def forget_texts(embedder: Embedder, tenant: str, texts: Sequence[str]) -> None:
    """Delete ``tenant``'s cached vectors of ``texts`` if ``embedder`` is a cache (else nothing to do)."""
    if isinstance(embedder, CachingEmbedder):
        await embedder.for_tenant(tenant).forget(texts)


def tenant_embedder(embedder: Embedder, tenant: str) -> Embedder:
    """``embedder``'s view for ``tenant``: its cache if it is a ``CachingEmbedder``, else itself."""
    return embedder.for_tenant(tenant) if isinstance(embedder, CachingEmbedder) else embedder
