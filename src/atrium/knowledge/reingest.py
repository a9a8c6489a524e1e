"""Incremental re-ingest: a changed document touches only its changed chunks.

A chunk is identified by a content hash of its text, heading path and page. When a document is ingested
again, each new chunk takes the row of an old chunk with the same hash (the first unused one, in order), so
an unchanged chunk keeps its id, its stored vector and its place in the vector and keyword indexes; only its
``ordinal`` is updated when chunks before it came or went. Old chunks left unmatched are deleted; new chunks
left unmatched are embedded and added.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.knowledge.chunking import Chunk as Piece
from atrium.store.models import Chunk


def chunk_key(heading: str, page: int | None, text: str) -> str:
    """The content hash that identifies a chunk across re-ingests."""
    digest = hashlib.sha256()
    for part in (heading, "" if page is None else str(page), text):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class OldChunk:
    id: int
    ordinal: int
    key: str
    text: str = ""


@dataclass(slots=True)
class Plan:
    """What re-ingesting a document does to its chunk rows."""

    kept: dict[int, OldChunk] = field(default_factory=dict)  # piece index -> the old row it keeps
    new: list[int] = field(default_factory=list)  # piece indexes to embed and insert
    removed: list[int] = field(default_factory=list)  # old chunk ids to delete
    removed_texts: list[str] = field(default_factory=list)  # their texts (for the embedding cache)


async def old_chunks(session: AsyncSession, org_id: str, document_id: str) -> list[OldChunk]:
    rows = await session.execute(
        select(Chunk.id, Chunk.ordinal, Chunk.heading, Chunk.page, Chunk.text)
        .where(Chunk.org_id == org_id, Chunk.document_id == document_id).order_by(Chunk.ordinal, Chunk.id)
    )
    return [OldChunk(int(row[0]), int(row[1]), chunk_key(row[2], row[3], row[4]), row[4]) for row in rows]


def plan(old: Sequence[OldChunk], pieces: Sequence[Piece]) -> Plan:
    """Match ``pieces`` (the document's new chunks) to ``old`` rows by content hash."""
    unused: dict[str, list[OldChunk]] = {}
    for chunk in old:
        unused.setdefault(chunk.key, []).append(chunk)
    result = Plan()
    for index, piece in enumerate(pieces):
        same = unused.get(chunk_key(piece.heading_path, piece.page, piece.text))
        if same:
            result.kept[index] = same.pop(0)
        else:
            result.new.append(index)
    left = [chunk for chunks in unused.values() for chunk in chunks]
    result.removed = [chunk.id for chunk in left]
    kept_texts = {piece.text for piece in pieces}
    result.removed_texts = [chunk.text for chunk in left if chunk.text not in kept_texts]
    return result


async def apply(session: AsyncSession, org_id: str, result: Plan, pieces: Sequence[Piece]) -> None:
    """Delete the removed rows and renumber the kept ones, in the caller's transaction (inserting the new
    rows is the caller's: it holds their vectors)."""
    if result.removed:
        await session.execute(delete(Chunk).where(Chunk.org_id == org_id, Chunk.id.in_(result.removed)))
    for index, chunk in result.kept.items():
        if chunk.ordinal != pieces[index].ordinal:
            await session.execute(update(Chunk).where(Chunk.org_id == org_id, Chunk.id == chunk.id)
                                  .values(ordinal=pieces[index].ordinal))
