"""The reranking stage (issue 14): re-score a search's best fused candidates with a stronger model.

No cross-encoder's weights can be installed from the package registries Atrium uses (looked for again on
2026-12-06), and the bundled 0.5B chat model ranked worse than the fusion it was meant to improve. The
reranker is therefore a stronger bi-encoder, all-mpnet-base-v2 (int8 ONNX, made by ``atrium models
export-mpnet``; 768-d, about 3x the bundled MiniLM's time per chunk): MiniLM and the keyword index still find the
candidates, and the reranker orders the top ``rerank.candidates`` of them by cosine with the question. Its
chunk vectors are made once, at ingestion (``chunks.rerank_embedding``), so a search embeds only its
question with it; the question's embedding runs beside candidate generation.

The final order is a weighted RRF of the reranker's order (``rerank.weight``) and the fused order: a
candidate without a reranking vector (ingested before the reranker was on, until the ``rerank_vectors`` job
has made it) keeps its fused rank's share only, so a partly covered collection degrades to the fused order.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import and_, exists, or_, select, update

from atrium.gateway.ports import Embedder, Vectors
from atrium.jobs.ports import ProgressFn
from atrium.knowledge.background import enqueue_missing, in_batches
from atrium.knowledge.fusion import reciprocal_rank_fusion
from atrium.knowledge.settings import RerankSettings
from atrium.store.engine import Database
from atrium.store.models import Chunk, Collection, Job

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from atrium.jobs.queue import DatabaseJobQueue
    from atrium.knowledge.service import KnowledgeService

log = logging.getLogger(__name__)

JOB_KIND = "rerank_vectors"
BATCH = 32  # chunks per embedding call and transaction


class EmbeddingReranker:
    """Reranks candidates by the cosine of a second, stronger embedding model (``embedder``)."""

    def __init__(self, embedder: Embedder, settings: RerankSettings) -> None:
        self.embedder = embedder
        self.settings = settings
        self.name: str = embedder.name
        self.dimensions: int = embedder.dimensions

    async def embed_documents(self, texts: Sequence[str]) -> Vectors:
        return await self.embedder.embed(texts)

    async def embed_query(self, query: str) -> np.ndarray:
        return (await self.embedder.embed([query], kind="query"))[0]

    def rerank(self, ranked: Sequence[tuple[int, float]], query_vector: np.ndarray,
               vectors: dict[int, np.ndarray], *, k: int, limit: int) -> list[tuple[int, float]]:
        """The first ``rerank.candidates`` of ``ranked`` (best first) re-ordered: weighted RRF of their order
        by cosine with ``query_vector`` (over those with a vector in ``vectors``) and their order in
        ``ranked``. Returns at most ``limit`` ``(id, score)`` pairs."""
        head = [chunk_id for chunk_id, _ in ranked[:max(limit, self.settings.candidates)]]
        scored = [(chunk_id, float(vectors[chunk_id] @ query_vector)) for chunk_id in head if chunk_id in vectors]
        by_model = [chunk_id for chunk_id, _ in sorted(scored, key=lambda pair: -pair[1])]
        weight = self.settings.weight
        return reciprocal_rank_fusion([by_model, head], k=k, limit=limit, weights=[weight, 1.0 - weight])


async def stored_vectors(session: AsyncSession, tenant: str, ids: Sequence[int], model: str,
                         dimensions: int) -> dict[int, np.ndarray]:
    """The reranking vectors of ``ids`` made with ``model`` (chunks of collections that record it)."""
    if not ids:
        return {}
    rows = await session.execute(
        select(Chunk.id, Chunk.rerank_embedding)
        .join(Collection, and_(Collection.org_id == Chunk.org_id, Collection.name == Chunk.collection))
        .where(Chunk.org_id == tenant, Chunk.id.in_(list(ids)), Chunk.rerank_embedding.is_not(None),
               Collection.rerank_model == model))
    width = dimensions * 4
    return {int(chunk_id): np.frombuffer(blob, dtype=np.float32) for chunk_id, blob in rows
            if blob is not None and len(blob) == width}


async def record_model(session: AsyncSession, tenant: str, collection: str, model: str) -> bool:
    """In the caller's transaction: a collection with no reranking model recorded takes ``model``. Returns
    whether the collection's record is now ``model`` (else its job redoes every vector)."""
    await session.execute(update(Collection).where(
        Collection.org_id == tenant, Collection.name == collection, Collection.rerank_model.is_(None),
    ).values(rerank_model=model))
    current = await session.scalar(select(Collection.rerank_model).where(
        Collection.org_id == tenant, Collection.name == collection))
    return current == model


def _needs_vectors(model: str) -> Any:
    """Collections whose chunks are not all covered by ``model``'s vectors."""
    missing = exists().where(Chunk.org_id == Collection.org_id, Chunk.collection == Collection.name,
                             Chunk.rerank_embedding.is_(None))
    other = and_(Collection.rerank_model.is_not(None), Collection.rerank_model != model)
    has_chunks = exists().where(Chunk.org_id == Collection.org_id, Chunk.collection == Collection.name)
    return and_(has_chunks, or_(other, Collection.rerank_model.is_(None), missing))


async def uncovered(db: Database, model: str) -> set[tuple[str, str]]:
    """Every (tenant, collection) with chunks lacking ``model``'s vectors: cross-tenant (a system session)."""
    async with db.system_session() as session:
        rows = await session.execute(select(Collection.org_id, Collection.name).where(_needs_vectors(model)))
    return {(org_id, name) for org_id, name in rows}


async def schedule(knowledge: KnowledgeService, jobs: DatabaseJobQueue) -> list[str]:
    """At start-up, with the reranker on: queue a ``rerank_vectors`` job per collection whose chunks lack
    its vectors (unless one is queued or running). Returns the new jobs' ids."""
    reranker = knowledge.reranker
    if reranker is None:
        return []
    targets = await uncovered(knowledge.db, reranker.name)
    if not targets:
        return []
    queued = await enqueue_missing(knowledge.db, jobs, JOB_KIND, targets, {"model": reranker.name})
    for _, tenant, collection in queued:
        log.info("collection %r of %s: making its reranking vectors in the background", collection, tenant)
    return [job_id for job_id, _, _ in queued]


def handler(knowledge: KnowledgeService) -> Callable[[Job, ProgressFn], Awaitable[dict[str, Any]]]:
    """The ``rerank_vectors`` job: give every chunk of one collection its reranking vector."""

    async def handle(job: Job, progress: ProgressFn) -> dict[str, Any]:
        reranker = knowledge.reranker
        if reranker is None or job.payload.get("model") != reranker.name:
            return {"chunks": 0, "skipped": "the reranking model is off or changed"}
        done = await cover_collection(knowledge.db, reranker, job.org_id, job.payload["collection"], progress)
        return {"chunks": done, "model": reranker.name}

    return handle


async def cover_collection(db: Database, reranker: EmbeddingReranker, tenant: str, collection: str,
                           progress: ProgressFn | None = None) -> int:
    """Make the reranking vectors ``collection`` lacks (all of them if it records another model), then
    record the model. Safe to run twice or after a crash: it resumes with the chunks still lacking one."""
    async with db.tenant_session(tenant) as session:
        recorded = await session.scalar(select(Collection.rerank_model).where(
            Collection.org_id == tenant, Collection.name == collection))
        if recorded is not None and recorded != reranker.name:
            # Another model's vectors must never be compared with this one's queries: they go, and the
            # record names no model until this one's are made (ingestion meanwhile records this one).
            await session.execute(update(Collection).where(Collection.org_id == tenant,
                                                           Collection.name == collection).values(rerank_model=None))
            await session.execute(update(Chunk).where(Chunk.org_id == tenant, Chunk.collection == collection)
                                  .values(rerank_embedding=None))
        ids = sorted(await session.scalars(select(Chunk.id).where(
            Chunk.org_id == tenant, Chunk.collection == collection, Chunk.rerank_embedding.is_(None))))
    done = await in_batches(ids, BATCH, lambda batch: _cover_batch(db, reranker, tenant, batch), progress)
    async with db.tenant_session(tenant) as session:
        await session.execute(update(Collection).where(Collection.org_id == tenant, Collection.name == collection)
                              .values(rerank_model=reranker.name))
    log.info("collection %r of %s: %d reranking vectors made with %s", collection, tenant, done, reranker.name)
    return done


async def _cover_batch(db: Database, reranker: EmbeddingReranker, tenant: str, ids: Sequence[int]) -> int:
    async with db.tenant_session(tenant) as session:
        rows = (await session.execute(select(Chunk.id, Chunk.text).where(
            Chunk.org_id == tenant, Chunk.id.in_(list(ids))).order_by(Chunk.id))).all()
    if not rows:
        return 0
    vectors = await reranker.embed_documents([text for _, text in rows])
    async with db.tenant_session(tenant) as session:
        for (chunk_id, _), vector in zip(rows, vectors, strict=True):
            await session.execute(update(Chunk).where(Chunk.org_id == tenant, Chunk.id == chunk_id).values(
                rerank_embedding=np.ascontiguousarray(vector, dtype=np.float32).tobytes()))
    return len(rows)
