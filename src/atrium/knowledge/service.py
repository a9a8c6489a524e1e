"""The knowledge use cases: ingest documents, search them (keyword, vector, hybrid), keep the vector index
consistent with the database.

The database is the truth. Chunks and their vectors are committed in one transaction per document, and the
tenant's knowledge revision is bumped in it; the vector index is updated after the commit and reconciled
against the database at start-up and whenever another process bumps a revision (``atrium ingest`` while
the server runs, or a crash between commit and index update).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import anyio
import numpy as np

from atrium.accounts.principal import Principal
from atrium.errors import InvalidRequest, NotFound
from atrium.gateway.ports import Embedder
from atrium.knowledge import reingest
from atrium.knowledge import repository as repo
from atrium.knowledge import rerank as reranking
from atrium.knowledge.chunkers import chunk_document
from atrium.knowledge.chunking import Chunk as ChunkPiece
from atrium.knowledge.collections import ensure as ensure_collection
from atrium.knowledge.directory import CollectionDirectory
from atrium.knowledge.embedders.cache import forget_texts, tenant_embedder
from atrium.knowledge.filters import SearchFilters, vector_ranking
from atrium.knowledge.fusion import fuse
from atrium.knowledge.ports import KeywordSearch, VectorIndex
from atrium.knowledge.reembed import adopt_unrecorded, record_model, stale
from atrium.knowledge.settings import KnowledgeSettings
from atrium.store.engine import Database
from atrium.store.models import Chunk, Document
from atrium.store.ports import PubSub, follow

log = logging.getLogger(__name__)

SearchMode = Literal["hybrid", "vector", "keyword"]
CHANGES_CHANNEL = "knowledge-changed"
COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def check_collection(name: str) -> str:
    if not COLLECTION_NAME.match(name):
        raise InvalidRequest("collection must be 1-100 letters, digits, '_', '-' or '.', starting with a "
                             "letter or digit")
    return name


@dataclass(frozen=True, slots=True)
class IngestResult:
    document_id: str
    source: str
    chunks: int
    status: Literal["created", "replaced", "unchanged"]


@dataclass(frozen=True, slots=True)
class SearchHit:
    chunk: repo.ChunkView
    score: float
    vector_score: float | None = None


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    added: int
    removed: int


class KnowledgeService:
    """Ingest, search and index upkeep for every tenant; tenant is a required argument throughout."""

    def __init__(self, db: Database, embedder: Embedder, index: VectorIndex, keyword: KeywordSearch,
                 settings: KnowledgeSettings, pubsub: PubSub | None = None,
                 directory: CollectionDirectory | None = None,
                 reranker: reranking.EmbeddingReranker | None = None) -> None:
        self.db = db
        self.reranker = reranker
        self.pubsub = pubsub
        # Forgets a tenant's collections whenever a change is announced, here or by another process.
        self.directory = directory if directory is not None else CollectionDirectory(db, ttl_s=0)
        self._nudge = asyncio.Event()
        self.embedder = embedder
        self.index = index
        self.keyword = keyword
        self.settings = settings
        self._seen_revisions: dict[str, int] = {}
        self._reconcile_lock = asyncio.Lock()
        self._dirty = False
        self._last_save = 0.0
        # (tenant, collection) whose vectors are of another embedding model, being re-embedded by a job
        # (knowledge/reembed.py); refreshed by every reconciliation.
        self.reindexing: set[tuple[str, str]] = set()
        self._adopted = False
        self._cleared: set[tuple[str, str]] = set()

    async def ingest_text(self, tenant: str, collection: str, source: str, text: str,
                          title: str = "", *, markdown: bool = True, paged: bool = False, file_type: str = "",
                          user_id: str | None = None, api_key_id: str | None = None) -> IngestResult:
        """Store ``text`` as the document ``source`` of ``collection`` (made organisation-wide if it does not
        exist: callers that decide who may write check that first). ``user_id`` / ``api_key_id``: who
        uploaded it; ``paged``: a PDF's text (``Page N`` headings give each chunk its page); ``file_type``:
        what the ``type`` search filter matches. Ingesting a changed document again keeps its id and its
        unchanged chunks (rows, vectors, index entries): only new chunks are embedded (``reingest``)."""
        check_collection(collection)
        content_hash = hashlib.sha256(text.encode()).hexdigest()
        async with self.db.tenant_session(tenant) as session:
            existing = await repo.find_document_by_source(session, tenant, collection, source)
            if existing is not None and existing.content_hash == content_hash:
                return IngestResult(existing.id, source, existing.chunk_count, "unchanged")
            old = await reingest.old_chunks(session, tenant, existing.id) if existing is not None else []
        pieces = await anyio.to_thread.run_sync(
            lambda: chunk_document(text, self.embedder.count_tokens, self.settings, markdown=markdown, paged=paged,
                                   count_many=getattr(self.embedder, "count_tokens_many", None))
        )
        first_plan = reingest.plan(old, pieces).new
        vectors = await self._embed(tenant, pieces, first_plan)
        rerank_vectors = await self._embed_for_rerank(pieces, first_plan)
        async with self.db.tenant_session(tenant) as session:
            existing = await repo.find_document_by_source(session, tenant, collection, source)
            old = await reingest.old_chunks(session, tenant, existing.id) if existing is not None else []
            plan = reingest.plan(old, pieces)
            # Rows another process removed since the first look: embedded now (rare).
            vectors.update(await self._embed(tenant, pieces, [i for i in plan.new if i not in vectors]))
            rerank_vectors.update(await self._embed_for_rerank(pieces, [i for i in plan.new
                                                                        if i not in rerank_vectors]))
            if existing is None:
                await ensure_collection(session, tenant, collection)
                document = Document(org_id=tenant, collection=collection, source=source)
                session.add(document)
            else:
                document = existing
            document.title, document.content_hash = title or source, content_hash
            document.size_bytes, document.chunk_count = len(text.encode()), len(pieces)
            document.file_type, document.user_id, document.api_key_id = file_type, user_id, api_key_id
            await record_model(session, tenant, collection, self.embedder.name, self.embedder.dimensions)
            if self.reranker is not None:
                await reranking.record_model(session, tenant, collection, self.reranker.name)
            await session.flush()
            await reingest.apply(session, tenant, plan, pieces)
            rows = [
                Chunk(org_id=tenant, document_id=document.id, collection=collection, ordinal=pieces[i].ordinal,
                      heading=pieces[i].heading_path, text=pieces[i].text, token_count=pieces[i].token_count,
                      page=pieces[i].page, embedding=np.ascontiguousarray(vectors[i], dtype=np.float32).tobytes(),
                      rerank_embedding=_blob(rerank_vectors.get(i)))
                for i in plan.new
            ]
            session.add_all(rows)
            await session.flush()
            revision = await repo.bump_revision(session, tenant)
            new_ids = [row.id for row in rows]
            document_id = document.id
        if plan.removed:
            await self.index.delete(tenant, collection, plan.removed)
            await forget_texts(self.embedder, tenant, plan.removed_texts)
        if new_ids:
            await self.index.add(tenant, collection, new_ids, np.stack([vectors[i] for i in plan.new]))
        self._dirty = True
        self._applied_here(tenant, revision)
        await self._announce(tenant)
        status: Literal["created", "replaced"] = "replaced" if existing is not None else "created"
        return IngestResult(document_id, source, len(pieces), status)

    def _applied_here(self, tenant: str, revision: int) -> None:
        """This process made ``tenant``'s change to ``revision`` and its index holds it: when nothing else
        changed since the last look, the upkeep loop need not reconcile (a full pass over every collection's
        chunk ids, on the event loop, after every ingested document otherwise)."""
        if self._seen_revisions.get(tenant, 0) == revision - 1:
            self._seen_revisions[tenant] = revision

    async def _embed(self, tenant: str, pieces: Sequence[ChunkPiece],
                     indexes: Sequence[int]) -> dict[int, np.ndarray]:
        """The vectors of ``pieces[i]`` for each ``i`` in ``indexes`` (one embedder call for all, through
        ``tenant``'s embedding cache)."""
        if not indexes:
            return {}
        vectors = await tenant_embedder(self.embedder, tenant).embed([pieces[i].text for i in indexes])
        return {i: vectors[n] for n, i in enumerate(indexes)}

    async def _embed_for_rerank(self, pieces: Sequence[ChunkPiece],
                                indexes: Sequence[int]) -> dict[int, np.ndarray]:
        """The reranking model's vectors of ``pieces[i]`` (none while the reranker is off)."""
        if self.reranker is None or not indexes:
            return {}
        vectors = await self.reranker.embed_documents([pieces[i].text for i in indexes])
        return {i: vectors[n] for n, i in enumerate(indexes)}

    async def delete_document(self, tenant: str, document_id: str) -> None:
        """Delete a document, its chunks and their vectors (callers check who may first)."""
        async with self.db.tenant_session(tenant) as session:
            document = await repo.get_document(session, tenant, document_id)
            if document is None:
                raise NotFound("No such document.")
            collection = document.collection
            removed, texts = await repo.delete_document_rows(session, tenant, document)
        await self._forget_vectors(tenant, {collection: removed}, texts)

    async def delete_documents(self, tenant: str, *, collection: str | None = None,
                               user_id: str | None = None, drop_collection: bool = False) -> int:
        """Delete every document of ``collection`` and/or uploaded by ``user_id``, with their vectors;
        ``drop_collection`` also removes the collection itself. Returns how many documents went."""
        removed: dict[str, list[int]] = {}
        texts: list[str] = []
        async with self.db.tenant_session(tenant) as session:
            documents = await repo.documents_where(session, tenant, collection=collection, user_id=user_id)
            for document in documents:
                ids, document_texts = await repo.delete_document_rows(session, tenant, document)
                removed.setdefault(document.collection, []).extend(ids)
                texts.extend(document_texts)
            if drop_collection and collection is not None:
                await repo.delete_collection_row(session, tenant, collection)
        await self._forget_vectors(tenant, removed, texts)
        return len(documents)

    async def _forget_vectors(self, tenant: str, removed: dict[str, list[int]], texts: Sequence[str]) -> None:
        """Drop deleted chunks from the index and their texts' vectors from the embedding cache."""
        for collection, ids in removed.items():
            if ids:
                await self.index.delete(tenant, collection, ids)
        await forget_texts(self.embedder, tenant, texts)
        self._dirty = True
        await self._announce(tenant)

    async def announce_change(self, tenant: str) -> None:
        """Tell other processes that ``tenant``'s knowledge changed (e.g. a collection's visibility)."""
        await self._announce(tenant)

    async def _announce(self, tenant: str) -> None:
        """Tell other processes (replicas, the server while the CLI ingests) to reconcile now."""
        self.directory.forget(tenant)
        if self.pubsub is not None:
            try:
                await self.pubsub.publish(CHANGES_CHANNEL, tenant)
            except Exception:  # a lost hint only delays the periodic check
                log.warning("could not announce a knowledge change", exc_info=True)

    def reranks(self, rerank: bool | None) -> bool:
        """Whether a search asking ``rerank`` (``None``: not saying) is reranked; ``InvalidRequest`` if it
        asks for it and no reranking model is loaded."""
        if rerank and self.reranker is None:
            raise InvalidRequest("Reranking is not available: no reranking model is loaded (see "
                                 "knowledge.rerank in docs/configuration.md).", code="rerank_unavailable")
        if rerank is None:
            return self.reranker is not None and self.settings.rerank.by_default
        return rerank

    async def search(self, tenant: str, query: str, *, mode: SearchMode = "hybrid", limit: int = 5,
                     collections: Sequence[str] | None = None,
                     filters: SearchFilters | None = None, rerank: bool | None = None) -> list[SearchHit]:
        """The best ``limit`` chunks for ``query``. Hybrid fuses the vector and keyword rankings with
        ``knowledge.fusion`` (weighted by ``knowledge.vector_weight``). ``filters`` narrow both rankings to
        the documents they match (``knowledge/filters.py``). ``rerank`` (``None``: ``knowledge.rerank.
        by_default``): the first ``knowledge.rerank.candidates`` of the mode's ranking are re-ordered by the
        reranking model (``knowledge/rerank.py``)."""
        if filters is not None and filters.empty:
            filters = None
        if collections is not None:
            if not collections:
                return []
            for name in collections:
                check_collection(name)
        reranker = self.reranker if self.reranks(rerank) else None
        if reranker is None:
            return await self._search(tenant, query, mode, limit, collections, filters, None)
        # The reranking model embeds the question while the candidates are found (on the other core).
        rerank_query = asyncio.ensure_future(reranker.embed_query(query))
        try:
            return await self._search(tenant, query, mode, limit, collections, filters, (reranker, rerank_query))
        finally:
            if not rerank_query.done():
                rerank_query.cancel()

    async def _search(self, tenant: str, query: str, mode: SearchMode, limit: int,
                      collections: Sequence[str] | None, filters: SearchFilters | None,
                      rerank: tuple[reranking.EmbeddingReranker, asyncio.Future[np.ndarray]] | None,
                      ) -> list[SearchHit]:
        embedding: asyncio.Future[np.ndarray] | None = None
        if mode in ("vector", "hybrid"):
            # In hybrid mode the question is embedded (a worker thread) while the keyword ranking runs (the
            # database's).
            embedding = asyncio.ensure_future(tenant_embedder(self.embedder, tenant).embed([query], kind="query"))
        try:
            return await self._ranked_hits(tenant, query, mode, limit, collections, filters, rerank, embedding)
        finally:
            if embedding is not None:
                if not embedding.done():
                    embedding.cancel()
                elif not embedding.cancelled():
                    embedding.exception()  # retrieved: the keyword ranking's error is the one raised

    async def _ranked_hits(self, tenant: str, query: str, mode: SearchMode, limit: int,
                           collections: Sequence[str] | None, filters: SearchFilters | None,
                           rerank: tuple[reranking.EmbeddingReranker, asyncio.Future[np.ndarray]] | None,
                           embedding: asyncio.Future[np.ndarray] | None) -> list[SearchHit]:
        depth = max(limit, self.settings.candidates)
        vector_scores: dict[int, float] = {}
        keyword_hits: list[tuple[int, float]] = []
        stored: dict[int, np.ndarray] = {}
        # With a reranker the mode's ranking is kept ``rerank.candidates`` deep, then re-ordered.
        keep = limit if rerank is None else max(limit, rerank[0].settings.candidates)
        if mode == "vector" and embedding is not None:
            await embedding  # no session is held while the question alone is embedded
        # One session (one connection, one transaction) for the rankings and the chunks' rows.
        async with self.db.tenant_session(tenant) as session:
            if mode in ("keyword", "hybrid"):
                keyword_hits = await self.keyword.search(session, tenant, collections, query, depth, filters)
            if embedding is not None:
                query_vector = (await embedding)[0]
                if filters is None:
                    hits = await self.index.search(tenant, collections, query_vector, depth)
                    vector_scores = {hit.id: hit.score for hit in hits}
                else:
                    vector_scores = await vector_ranking(session, self.index, tenant, collections, filters,
                                                         query_vector, depth)
            vector_ranked = sorted(vector_scores.items(), key=lambda item: -item[1])
            if mode == "vector":
                ranked = vector_ranked[:keep]
            elif mode == "keyword":
                ranked = keyword_hits[:keep]
            else:
                ranked = fuse(vector_ranked, keyword_hits, method=self.settings.fusion,
                              vector_weight=self.settings.vector_weight, k=self.settings.rrf_k, limit=keep)
            if rerank is not None and ranked:
                stored = await reranking.stored_vectors(session, tenant, [chunk_id for chunk_id, _ in ranked],
                                                        rerank[0].name, rerank[0].dimensions)
            views = await repo.chunk_views(session, tenant, [chunk_id for chunk_id, _ in ranked])
        if rerank is not None and ranked:
            ranked = rerank[0].rerank(ranked, await rerank[1], stored, k=self.settings.rrf_k, limit=limit)
        # A chunk deleted since the index answered is dropped rather than shown.
        return [SearchHit(views[chunk_id], score, vector_scores.get(chunk_id))
                for chunk_id, score in ranked if chunk_id in views]

    async def search_readable(self, principal: Principal, query: str, *, mode: SearchMode, limit: int,
                              collection: str | None = None, filters: SearchFilters | None = None,
                              rerank: bool | None = None) -> list[SearchHit]:
        """``search`` on behalf of ``principal``: in ``collection`` (``NotFound`` unless it may read it), or
        in every collection it may read; ``filters`` narrow that, never widen it."""
        names = await self.directory.searchable(principal, [check_collection(collection)] if collection else None)
        return await self.search(principal.org_id, query, mode=mode, limit=limit, collections=names,
                                 filters=filters, rerank=rerank)

    async def reindexing_readable(self, principal: Principal, collection: str | None = None) -> list[str]:
        """The collections ``principal`` may read (``collection`` only, if given) that are being re-embedded
        after a change of embedding model: their vector ranking is partial meanwhile."""
        names = {name for tenant, name in self.reindexing if tenant == principal.org_id}
        if not names or (collection is not None and collection not in names):
            return []
        readable = await self.directory.searchable(principal, [collection] if collection else None)
        return sorted(names.intersection(readable))

    async def reconcile(self) -> ReconcileReport:
        """Make the vector index hold exactly the database's chunks, for every tenant and collection."""
        async with self._reconcile_lock:
            added = removed = 0
            # The one cross-tenant read: which tenants and collections exist.
            async with self.db.system_session() as session:
                revisions = await repo.revisions(session)
                pairs = await repo.tenant_collections(session)
            # Vectors of another embedding model are never loaded: their collections' jobs re-embed them.
            if not self._adopted:
                await adopt_unrecorded(self.db, self.embedder.name, self.embedder.dimensions)
                self._adopted = True
            skipped = await stale(self.db, self.embedder.name, self.embedder.dimensions)
            self.reindexing = skipped
            expected: dict[str, set[str]] = {}
            for tenant, collection in pairs:
                expected.setdefault(tenant, set()).add(collection)
            tenants = set(expected) | set(revisions)
            for tenant in tenants:
                for collection in set(await self.index.collections(tenant)) | expected.get(tenant, set()):
                    if (tenant, collection) in skipped:
                        await self._clear_stale(tenant, collection)
                        continue
                    a, r = await self.reconcile_collection(tenant, collection)
                    added, removed = added + a, removed + r
            self._seen_revisions = revisions
            if added or removed:
                self._dirty = True
                log.info("vector index reconciled: %d added, %d removed", added, removed)
            return ReconcileReport(added, removed)

    async def _clear_stale(self, tenant: str, collection: str) -> None:
        """Once per process, drop a stale collection's vectors from the index: of the same width they would
        still be found, compared with queries of another model. Its job re-adds them, re-embedded."""
        if (tenant, collection) not in self._cleared:
            self._cleared.add((tenant, collection))
            if held := await self.index.ids(tenant, collection):
                await self.index.delete(tenant, collection, sorted(held))

    async def reconcile_collection(self, tenant: str, collection: str) -> tuple[int, int]:
        """Make the index hold exactly ``collection``'s chunks; returns (added, removed)."""
        async with self.db.tenant_session(tenant) as session:
            truth = await repo.collection_chunk_ids(session, tenant, collection)
        held = await self.index.ids(tenant, collection)
        extra = sorted(held - truth)
        if extra:
            await self.index.delete(tenant, collection, extra)
        missing = truth - held
        if missing:
            async with self.db.tenant_session(tenant) as session:
                async for ids, vectors in repo.iter_embeddings(session, tenant, sorted(missing),
                                                               self.index.dimensions):
                    await self.index.add(tenant, collection, ids, vectors)
        return len(missing), len(extra)

    async def differences(self) -> dict[tuple[str, str], tuple[int, int]]:
        """Per (tenant, collection): how many chunks the index lacks and how many it holds in excess."""
        async with self.db.system_session() as session:
            pairs = set(await repo.tenant_collections(session))
            tenants = {tenant for tenant, _ in pairs} | set(await repo.revisions(session))
        for tenant in tenants:
            pairs |= {(tenant, collection) for collection in await self.index.collections(tenant)}
        report: dict[tuple[str, str], tuple[int, int]] = {}
        for tenant, collection in sorted(pairs - await stale(self.db, self.embedder.name, self.embedder.dimensions)):
            async with self.db.tenant_session(tenant) as session:
                truth = await repo.collection_chunk_ids(session, tenant, collection)
            held = await self.index.ids(tenant, collection)
            if truth != held:
                report[(tenant, collection)] = (len(truth - held), len(held - truth))
        return report

    async def changed_elsewhere(self) -> bool:
        async with self.db.system_session() as session:
            return await repo.revisions(session) != self._seen_revisions

    async def save_index(self, *, force: bool = False) -> None:
        """Persist the index when it changed, at most every ``index_save_interval_s`` unless forced.
        Saving is an optimisation only: reconciliation repairs whatever a crash left unsaved."""
        now = asyncio.get_running_loop().time()
        if self._dirty and (force or now - self._last_save >= self.settings.index_save_interval_s):
            self._dirty = False
            self._last_save = now
            await self.index.save()

    async def keep_consistent(self) -> None:
        """Background loop: reconcile when another process changed the knowledge (checked every
        ``reconcile_interval_s``, or at once when a change is announced on the pub/sub); save when dirty."""
        listener = asyncio.create_task(self._listen()) if self.pubsub is not None else None
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._nudge.wait(), timeout=self.settings.reconcile_interval_s)
                self._nudge.clear()
                await self._upkeep()
        finally:
            if listener is not None:
                listener.cancel()
                await asyncio.gather(listener, return_exceptions=True)

    async def _listen(self) -> None:
        assert self.pubsub is not None
        def changed(tenant: str) -> None:
            self.directory.forget(tenant)
            self._nudge.set()

        await follow(self.pubsub, CHANGES_CHANNEL, changed, on_gap=self.directory.forget_all)

    async def _upkeep(self) -> None:
        try:
            if await self.changed_elsewhere():
                await self.reconcile()
            await self.save_index()
        except Exception:  # a failed round is retried next interval; the loop must survive
            log.exception("vector index upkeep failed")


def _blob(vector: np.ndarray | None) -> bytes | None:
    return None if vector is None else np.ascontiguousarray(vector, dtype=np.float32).tobytes()
