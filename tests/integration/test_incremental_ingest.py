"""Issue 14: re-ingesting a changed document touches only its changed chunks, and metadata filters narrow
keyword, vector and hybrid search; on a migrated SQLite file (FTS5, HNSW index) and on real PostgreSQL
(tsvector, pgvector). The embedder is the real hash adapter behind a counting wrapper."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import anyio
import pytest
from sqlalchemy import select, update

from atrium.gateway.ports import EmbedKind, Vectors
from atrium.knowledge import filters as filters_module
from atrium.knowledge.embedders.fake import HashEmbedder
from atrium.knowledge.filters import SearchFilters
from atrium.knowledge.keyword import PostgresKeywordSearch, SqliteKeywordSearch
from atrium.knowledge.ports import KeywordSearch, VectorIndex
from atrium.knowledge.service import KnowledgeService
from atrium.knowledge.settings import KnowledgeSettings
from atrium.knowledge.vector.hnsw import HnswVectorIndex
from atrium.store.engine import Database, build_engine
from atrium.store.migrate import upgrade
from atrium.store.models import Chunk, Document, Organization

pytestmark = pytest.mark.integration
ChunkerName = Literal["structured", "window"]

ORG = "org-a"
SECTIONS = {
    "Install": "Install the package with pip. It needs Python 3.12 or newer.",
    "Configure": "Set the data directory with ATRIUM_DATA_DIR. The default is ./data beside the process.",
    "Refunds": "Refunds are issued within 14 days of a request, to the card that paid.",
    "Invoices": "Invoices are emailed on the first day of every month.",
}


def document(sections: dict[str, str]) -> str:
    return "\n\n".join(f"## {title}\n\n{body}" for title, body in sections.items())


class CountingEmbedder:
    """The real hash embedder, counting the texts it is asked to embed."""

    def __init__(self, inner: HashEmbedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.dimensions = inner.dimensions
        self.texts: list[str] = []

    async def embed(self, texts: Sequence[str], *, kind: EmbedKind = "document") -> Vectors:
        if kind == "document":
            self.texts.extend(texts)
        return await self.inner.embed(texts, kind=kind)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)


@dataclass
class Knowledge:
    service: KnowledgeService
    embedder: CountingEmbedder
    db: Database


@pytest.fixture(params=["sqlite", "postgres"])
async def knowledge(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Knowledge]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'atrium.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    await anyio.to_thread.run_sync(upgrade, url)
    db = Database(build_engine(url))
    embedder = CountingEmbedder(HashEmbedder(dimensions=128))
    index: VectorIndex
    keyword: KeywordSearch
    if request.param == "sqlite":
        index, keyword = HnswVectorIndex(None, embedder.dimensions), SqliteKeywordSearch()
    else:
        from atrium.knowledge.vector.pgvector import PgVectorIndex

        pg = PgVectorIndex(db, embedder.dimensions)
        await pg.ensure_schema()
        index, keyword = pg, PostgresKeywordSearch()
    service = KnowledgeService(db, embedder, index, keyword, KnowledgeSettings(chunk_tokens=40, chunk_overlap=0))
    try:
        async with db.system_session() as session:
            session.add(Organization(id=ORG, name="a"))
        yield Knowledge(service, embedder, db)
    finally:
        await db.dispose()


async def chunk_rows(db: Database, source: str) -> dict[int, str]:
    async with db.tenant_session(ORG) as session:
        rows = await session.execute(select(Chunk.id, Chunk.text).join(Document, Document.id == Chunk.document_id)
                                     .where(Document.source == source))
        return {int(row[0]): row[1] for row in rows}


@pytest.mark.parametrize("chunker", ["structured", "window"])
async def test_reingest_embeds_only_the_changed_chunks(knowledge: Knowledge, chunker: ChunkerName) -> None:
    service, embedder = knowledge.service, knowledge.embedder
    service.settings = KnowledgeSettings(chunker=chunker, chunk_tokens=40, chunk_overlap=0)
    first = await service.ingest_text(ORG, "docs", "guide.md", document(SECTIONS))
    before = await chunk_rows(knowledge.db, "guide.md")
    assert len(before) == len(SECTIONS) and len(embedder.texts) == len(SECTIONS)
    embedder.texts.clear()

    edited = {**SECTIONS, "Refunds": "Refunds are now paid back within 30 days, by bank transfer only."}
    second = await service.ingest_text(ORG, "docs", "guide.md", document(edited))

    assert second.status == "replaced" and second.document_id == first.document_id
    assert len(embedder.texts) == 1 and "bank transfer" in embedder.texts[0]  # the one changed chunk
    after = await chunk_rows(knowledge.db, "guide.md")
    kept = {chunk_id for chunk_id, text in before.items() if "Refunds" not in text}
    assert kept <= set(after) and len(kept) == 3  # unchanged chunks keep their ids
    assert len(after) == 4 and not any("14 days" in text for text in after.values())
    # The vector index holds exactly the database's chunks (nothing stale, nothing missing).
    assert await service.index.ids(ORG, "docs") == set(after)
    for mode in ("keyword", "vector", "hybrid"):
        new = await service.search(ORG, "bank transfer refunds paid back", mode=mode, limit=1)
        assert "bank transfer" in new[0].chunk.text, mode
        old = await service.search(ORG, "card that paid 14 days", mode=mode, limit=10)
        assert all("14 days" not in hit.chunk.text for hit in old), mode

    # The same text again: nothing embedded, nothing touched.
    embedder.texts.clear()
    again = await service.ingest_text(ORG, "docs", "guide.md", document(edited))
    assert again.status == "unchanged" and embedder.texts == []
    # A section removed and one added before the others: the rest keep their ids, renumbered.
    moved = {"News": "A new section at the top.", **{k: v for k, v in edited.items() if k != "Invoices"}}
    await service.ingest_text(ORG, "docs", "guide.md", document(moved))
    assert len(embedder.texts) == 1 and "new section" in embedder.texts[0]
    final = await chunk_rows(knowledge.db, "guide.md")
    assert set(after) - set(final) == {i for i, text in after.items() if "Invoices" in text}
    assert await service.index.ids(ORG, "docs") == set(final)
    assert await service.search(ORG, "invoices emailed", mode="keyword", limit=5) == []


async def _store(knowledge: Knowledge) -> None:
    service = knowledge.service
    for source, file_type in (("manuals/refunds.pdf", "pdf"), ("manuals/invoices.md", "md"),
                              ("web/refunds.html", "html"), ("notes/refunds.txt", "txt")):
        await service.ingest_text(ORG, "docs", source, f"Refunds and invoices, as told by {source}.",
                                  file_type=file_type)
    async with knowledge.db.tenant_session(ORG) as session:  # one of them stored a year ago
        await session.execute(update(Document).where(Document.source == "notes/refunds.txt")
                              .values(created_at=datetime.now(UTC) - timedelta(days=365)))


@pytest.mark.parametrize("mode", ["keyword", "vector", "hybrid"])
async def test_filters_narrow_every_mode(knowledge: Knowledge, mode: str) -> None:
    await _store(knowledge)

    async def sources(filters: SearchFilters) -> set[str]:
        hits = await knowledge.service.search(ORG, "refunds invoices", mode=mode, limit=10,  # type: ignore[arg-type]
                                              filters=filters)
        return {hit.chunk.source for hit in hits}

    everything = {"manuals/refunds.pdf", "manuals/invoices.md", "web/refunds.html", "notes/refunds.txt"}
    assert await sources(SearchFilters()) == everything
    assert await sources(SearchFilters.of(source="manuals/*")) == {"manuals/refunds.pdf", "manuals/invoices.md"}
    assert await sources(SearchFilters.of(source="manuals/refunds.pdf")) == {"manuals/refunds.pdf"}
    assert await sources(SearchFilters.of(source="manuals")) == set()  # exact unless it ends with *
    assert await sources(SearchFilters.of(source="MANUALS/*")) == set()  # case-sensitive
    assert await sources(SearchFilters.of(source="manual%/*")) == set()  # no LIKE wildcards
    assert await sources(SearchFilters.of(types=["html", "txt"])) == {"web/refunds.html", "notes/refunds.txt"}
    month_ago = datetime.now(UTC) - timedelta(days=30)
    assert await sources(SearchFilters.of(created_before=month_ago)) == {"notes/refunds.txt"}
    assert await sources(SearchFilters.of(created_after=month_ago.replace(tzinfo=None))) == everything - {
        "notes/refunds.txt"}
    assert await sources(SearchFilters.of(source="manuals/*", types=["md"], created_after=month_ago)) == {
        "manuals/invoices.md"}


@pytest.mark.parametrize("exact_limit", [5000, 3])
async def test_vector_filter_finds_the_best_match_when_most_hits_are_filtered_out(
        knowledge: Knowledge, exact_limit: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """60 near-duplicates of the query outrank the one PDF; the filter leaves only the PDF pages. Both ways:
    ranked exactly from the stored vectors, and (over the exact limit) by asking the index for more."""
    monkeypatch.setattr(filters_module, "EXACT_LIMIT", exact_limit)
    service = knowledge.service
    for n in range(60):
        await service.ingest_text(ORG, "docs", f"faq/{n}.md", f"How to rotate signing keys, answer {n}.",
                                  file_type="md")
    for n in range(4):
        await service.ingest_text(ORG, "docs", f"specs/{n}.pdf", f"Specification page {n}: rotate keys yearly.",
                                  file_type="pdf")
    await service.ingest_text(ORG, "docs", "specs/keys.pdf", "How to rotate signing keys: the specification.",
                              file_type="pdf")
    hits = await service.search(ORG, "How to rotate signing keys", mode="vector", limit=3,
                                filters=SearchFilters.of(types=["pdf"]))
    assert len(hits) == 3 and all(hit.chunk.source.startswith("specs/") for hit in hits)
    assert hits[0].chunk.source == "specs/keys.pdf"
