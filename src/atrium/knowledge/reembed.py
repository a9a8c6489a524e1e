"""Re-embedding collections after a change of embedding model.

Each collection records the model id and dimension its vectors were made with (``collections.
embedding_model`` / ``embedding_dimensions``, set by its first ingestion). At start-up ``schedule``
compares them with the configured embedder and queues one ``reembed`` job per collection that differs
(and deletes the embedding cache's vectors of other models);
the job (``handler``) re-embeds the collection's chunks in batches with the new model, replaces their
stored vectors, adds them to the vector index, and at the end records the new model.

While a collection is being re-embedded it stays searchable: keyword search sees all of its chunks, vector
search the chunks already re-embedded (old vectors are of another model and maybe another width: they are
never compared with a query; ``KnowledgeService.reconcile`` leaves a stale collection to its job, and an
index file of another width is set aside on load). ``stale`` names the collections in that state. The
job's progress is the fraction of chunks done; it is safe to run twice or to resume after a crash (it
starts over).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import and_, func, or_, select, update

from atrium.jobs.ports import ProgressFn
from atrium.knowledge import repository as repo
from atrium.knowledge.background import enqueue_missing, in_batches
from atrium.knowledge.embedders.cache import CachingEmbedder, SqlVectorStore, tenant_embedder
from atrium.store.engine import Database
from atrium.store.models import Chunk, Collection, Job

if TYPE_CHECKING:
    from atrium.jobs.queue import DatabaseJobQueue
    from atrium.knowledge.service import KnowledgeService

log = logging.getLogger(__name__)

JOB_KIND = "reembed"
BATCH = 64  # chunks per embedding call and transaction
UNKNOWN_MODEL = "unknown"


def _differs(model: str, dimensions: int) -> Any:
    return and_(Collection.embedding_model.is_not(None),
                or_(Collection.embedding_model != model, Collection.embedding_dimensions != dimensions))


async def record_model(session: Any, tenant: str, collection: str, model: str, dimensions: int) -> None:
    """In the caller's transaction: a collection without a recorded model takes ``model`` (its first
    chunks are being stored with it). A stale collection keeps its record until its job is done."""
    await session.execute(update(Collection).where(
        Collection.org_id == tenant, Collection.name == collection, Collection.embedding_model.is_(None),
    ).values(embedding_model=model, embedding_dimensions=dimensions))


async def stale(db: Database, model: str, dimensions: int) -> set[tuple[str, str]]:
    """Every (tenant, collection) whose vectors are of another model: cross-tenant (a system session)."""
    async with db.system_session() as session:
        rows = await session.execute(select(Collection.org_id, Collection.name).where(_differs(model, dimensions)))
    return {(org_id, name) for org_id, name in rows}


async def adopt_unrecorded(db: Database, model: str, dimensions: int) -> int:
    """Collections holding chunks but no recorded model (made before the record existed): vectors of the
    current width are taken as the current model's, others as an unknown model's (to be re-embedded)."""
    adopted = 0
    async with db.system_session() as session:
        rows = (await session.execute(
            select(Collection.id, Collection.org_id, Collection.name).where(Collection.embedding_model.is_(None))
        )).all()
        for collection_id, org_id, name in rows:
            width = await session.scalar(select(func.length(Chunk.embedding)).where(
                Chunk.org_id == org_id, Chunk.collection == name).limit(1))
            if width is None:
                continue  # no chunks yet: its first ingestion records the model
            found = int(width) // 4
            values = (model, dimensions) if found == dimensions else (UNKNOWN_MODEL, found)
            await session.execute(update(Collection).where(Collection.id == collection_id).values(
                embedding_model=values[0], embedding_dimensions=values[1]))
            adopted += 1
    return adopted


async def schedule(knowledge: KnowledgeService, jobs: DatabaseJobQueue) -> list[str]:
    """At start-up: queue a ``reembed`` job for every collection made with another model (unless one is
    already queued or running for it). Returns the new jobs' ids."""
    model, dimensions = knowledge.embedder.name, knowledge.embedder.dimensions
    cache = knowledge.embedder
    if (isinstance(cache, CachingEmbedder) and isinstance(cache.store, SqlVectorStore)
            and (pruned := await cache.store.prune(cache.fingerprint))):
        log.info("embedding cache: %d vectors of other models deleted", pruned)
    await adopt_unrecorded(knowledge.db, model, dimensions)
    targets = await stale(knowledge.db, model, dimensions)
    knowledge.reindexing |= targets
    if not targets:
        return []
    queued = await enqueue_missing(knowledge.db, jobs, JOB_KIND, targets, {"model": model, "dimensions": dimensions})
    for _, tenant, collection in queued:
        log.info("collection %r of %s: embedding model changed, re-embedding in the background", collection, tenant)
    return [job_id for job_id, _, _ in queued]


def handler(knowledge: KnowledgeService) -> Callable[[Job, ProgressFn], Awaitable[dict[str, Any]]]:
    """The ``reembed`` job: re-embed one collection with the configured model."""

    async def handle(job: Job, progress: ProgressFn) -> dict[str, Any]:
        collection = job.payload["collection"]
        model, dimensions = knowledge.embedder.name, knowledge.embedder.dimensions
        if (job.payload.get("model"), job.payload.get("dimensions")) != (model, dimensions):
            return {"chunks": 0, "skipped": "the configured model changed again"}
        if (job.org_id, collection) not in await stale(knowledge.db, model, dimensions):
            return {"chunks": 0, "skipped": "already up to date"}
        done = await reembed_collection(knowledge, job.org_id, collection, progress)
        return {"chunks": done, "model": model, "dimensions": dimensions}

    return handle


async def reembed_collection(knowledge: KnowledgeService, tenant: str, collection: str,
                             progress: ProgressFn | None = None) -> int:
    """Re-embed every chunk of ``collection`` with the configured model, then record the model."""
    embedder, index, db = knowledge.embedder, knowledge.index, knowledge.db
    held = await index.ids(tenant, collection)
    if held:  # from an interrupted run: start over
        await index.delete(tenant, collection, sorted(held))
    async with db.tenant_session(tenant) as session:
        ids = sorted(await repo.collection_chunk_ids(session, tenant, collection))
    done = await in_batches(ids, BATCH, lambda batch: _reembed_batch(knowledge, tenant, collection, batch), progress)
    async with db.tenant_session(tenant) as session:
        await session.execute(update(Collection).where(Collection.org_id == tenant, Collection.name == collection)
                              .values(embedding_model=embedder.name, embedding_dimensions=embedder.dimensions))
        await repo.bump_revision(session, tenant)
    # Chunks deleted or replaced meanwhile: the index is made to hold exactly the database's chunks.
    await knowledge.reconcile_collection(tenant, collection)
    knowledge.reindexing.discard((tenant, collection))
    await knowledge.announce_change(tenant)
    log.info("collection %r of %s re-embedded with %s (%d chunks)", collection, tenant, embedder.name, done)
    return done


async def _reembed_batch(knowledge: KnowledgeService, tenant: str, collection: str, ids: Sequence[int]) -> int:
    async with knowledge.db.tenant_session(tenant) as session:
        rows = (await session.execute(select(Chunk.id, Chunk.text).where(
            Chunk.org_id == tenant, Chunk.collection == collection, Chunk.id.in_(ids)).order_by(Chunk.id))).all()
    if not rows:
        return 0
    # Through the tenant's cache of the new model: never a vector of the old one.
    vectors = await tenant_embedder(knowledge.embedder, tenant).embed([text for _, text in rows])
    kept: list[int] = []
    async with knowledge.db.tenant_session(tenant) as session:
        for (chunk_id, _), vector in zip(rows, vectors, strict=True):
            result = await session.execute(update(Chunk).where(Chunk.org_id == tenant, Chunk.id == chunk_id).values(
                embedding=np.ascontiguousarray(vector, dtype=np.float32).tobytes()))
            if result.rowcount:  # type: ignore[attr-defined]
                kept.append(chunk_id)
    if kept:
        positions = [i for i, (chunk_id, _) in enumerate(rows) if chunk_id in set(kept)]
        await knowledge.index.add(tenant, collection, kept, vectors[positions])
    return len(kept)
