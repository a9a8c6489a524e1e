"""Documents and chunks in the database. Every function takes the tenant (``org_id``) first, except the two
index-upkeep reads across tenants (``revisions``, ``tenant_collections``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.gateway.ports import Vectors
from atrium.store.models import Chunk, Collection, Document, KnowledgeRevision


@dataclass(frozen=True, slots=True)
class ChunkView:
    id: int
    document_id: str
    collection: str
    source: str
    title: str
    heading: str
    text: str
    page: int | None = None


async def bump_revision(session: AsyncSession, org_id: str) -> int:
    """Mark the tenant's chunks as changed, in the caller's transaction; returns the new revision."""
    updated = await session.execute(
        update(KnowledgeRevision)
        .where(KnowledgeRevision.org_id == org_id)
        .values(revision=KnowledgeRevision.revision + 1)
    )
    if updated.rowcount == 0:  # type: ignore[attr-defined]
        session.add(KnowledgeRevision(org_id=org_id, revision=1))
        return 1
    revision = await session.scalar(select(KnowledgeRevision.revision).where(KnowledgeRevision.org_id == org_id))
    return int(revision or 0)


async def revisions(session: AsyncSession) -> dict[str, int]:
    """Every tenant's knowledge revision: cross-tenant, for a system session (index upkeep) only."""
    rows = await session.execute(select(KnowledgeRevision.org_id, KnowledgeRevision.revision))
    return {org_id: int(revision) for org_id, revision in rows}


async def find_document_by_source(session: AsyncSession, org_id: str, collection: str,
                                  source: str) -> Document | None:
    return await session.scalar(
        select(Document).where(Document.org_id == org_id, Document.collection == collection,
                               Document.source == source)
    )


async def delete_document_rows(session: AsyncSession, org_id: str, document: Document) -> tuple[list[int], list[str]]:
    """Delete a document and its chunks; returns the deleted chunks' ids (for the vector index) and texts (for
    the embedding cache)."""
    rows = (await session.execute(select(Chunk.id, Chunk.text).where(Chunk.org_id == org_id,
                                                                      Chunk.document_id == document.id))).all()
    await session.execute(delete(Chunk).where(Chunk.org_id == org_id, Chunk.document_id == document.id))
    await session.delete(document)
    await bump_revision(session, org_id)
    return [int(row[0]) for row in rows], [row[1] for row in rows]


async def documents_where(session: AsyncSession, org_id: str, *, collection: str | None,
                          user_id: str | None) -> list[Document]:
    if collection is None and user_id is None:
        raise ValueError("name a collection or an uploader")
    query = select(Document).where(Document.org_id == org_id)
    if collection is not None:
        query = query.where(Document.collection == collection)
    if user_id is not None:
        query = query.where(Document.user_id == user_id)
    return list(await session.scalars(query))


async def delete_collection_row(session: AsyncSession, org_id: str, name: str) -> None:
    await session.execute(delete(Collection).where(Collection.org_id == org_id, Collection.name == name))


async def get_document(session: AsyncSession, org_id: str, document_id: str) -> Document | None:
    return await session.scalar(select(Document).where(Document.org_id == org_id, Document.id == document_id))


async def list_documents(session: AsyncSession, org_id: str, collections: Sequence[str], limit: int,
                         offset: int) -> list[Document]:
    """Documents of ``collections`` (the ones the caller may read), newest first."""
    query = select(Document).where(Document.org_id == org_id, Document.collection.in_(list(collections)))
    rows = await session.scalars(query.order_by(Document.created_at.desc()).limit(limit).offset(offset))
    return list(rows)


async def chunk_views(session: AsyncSession, org_id: str, ids: Sequence[int]) -> dict[int, ChunkView]:
    if not ids:
        return {}
    rows = await session.execute(
        select(Chunk.id, Chunk.document_id, Chunk.collection, Document.source, Document.title, Chunk.heading,
               Chunk.text, Chunk.page)
        .join(Document, Document.id == Chunk.document_id)
        .where(Chunk.org_id == org_id, Chunk.id.in_(list(ids)))
    )
    return {int(row[0]): ChunkView(int(row[0]), *row[1:]) for row in rows}


async def tenant_collections(session: AsyncSession) -> list[tuple[str, str]]:
    """Every (tenant, collection) holding chunks: cross-tenant, for a system session (index upkeep) only."""
    rows = await session.execute(select(Chunk.org_id, Chunk.collection).distinct())
    return [(org_id, collection) for org_id, collection in rows]


async def collection_chunk_ids(session: AsyncSession, org_id: str, collection: str) -> set[int]:
    rows = await session.scalars(select(Chunk.id).where(Chunk.org_id == org_id, Chunk.collection == collection))
    return set(rows)


async def iter_embeddings(session: AsyncSession, org_id: str, ids: Sequence[int], dimensions: int,
                          batch: int = 2000) -> AsyncIterator[tuple[list[int], Vectors]]:
    """Stored vectors for ``ids`` in batches, for rebuilding the index from the database."""
    ordered = sorted(ids)
    for start in range(0, len(ordered), batch):
        part = ordered[start:start + batch]
        rows = (await session.execute(
            select(Chunk.id, Chunk.embedding).where(Chunk.org_id == org_id, Chunk.id.in_(part))
        )).all()
        if rows:
            vectors = np.frombuffer(b"".join(row[1] for row in rows), dtype=np.float32).reshape(-1, dimensions)
            yield [int(row[0]) for row in rows], vectors

