"""Issue 14: the embedding cache (knowledge/embedders/cache.py) in front of the real bundled ONNX model, on a
migrated SQLite file and on real PostgreSQL (pgserver). A counting wrapper around the ONNX adapter records
every text the model is given: re-ingesting an unchanged or re-uploaded text, in this process or the next,
never reaches the model; a question asked twice is embedded once; another tenant or another model (or the
same model with other vector-shaping settings) never reads these vectors."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import anyio
import numpy as np
import pytest
from sqlalchemy import func, select

from atrium.gateway.ports import Embedder, EmbedKind, Vectors
from atrium.knowledge import reembed
from atrium.knowledge.embedders.cache import CachingEmbedder, SqlVectorStore
from atrium.knowledge.embedders.factory import model_fingerprint
from atrium.knowledge.embedders.onnx_minilm import OnnxEmbedder
from atrium.knowledge.service import KnowledgeService
from atrium.knowledge.settings import EmbeddingSettings, KnowledgeSettings
from atrium.store.engine import Database, build_engine
from atrium.store.migrate import upgrade
from atrium.store.models import Chunk, EmbeddingCacheEntry, Organization
from tests.knowledge_services import knowledge_service

pytestmark = pytest.mark.integration

ORG, OTHER = "org-a", "org-b"
PARAGRAPHS = [
    "Refunds are issued within 14 days of a request, to the card that paid for the order.",
    "Invoices are emailed on the first day of every month to the billing contact of the account.",
    "The helm chart deploys three replicas behind an ingress and upgrades them one at a time.",
    "Set the data directory with ATRIUM_DATA_DIR; the default is a folder named data beside the process.",
]
TEXT = "\n\n".join(PARAGRAPHS)
SETTINGS = KnowledgeSettings(chunker="window", window_words=16, window_overlap=0, min_relevance=0.0)


class CountingOnnx:
    """The real ONNX adapter; ``texts`` lists every text it was asked to embed, by kind."""

    def __init__(self, inner: OnnxEmbedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.dimensions = inner.dimensions
        self.max_input_tokens = inner.max_input_tokens
        self.texts: dict[str, list[str]] = {"document": [], "query": []}

    async def embed(self, texts: Sequence[str], *, kind: EmbedKind = "document") -> Vectors:
        self.texts[kind].extend(texts)
        return await self.inner.embed(texts, kind=kind)

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)


@pytest.fixture(scope="module")
def onnx() -> OnnxEmbedder:
    return OnnxEmbedder()


@pytest.fixture(scope="module")
def onnx_256() -> OnnxEmbedder:
    """The same model file, another model for the cache: its vectors are cut to 256 dimensions."""
    return OnnxEmbedder(dimensions=256)


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'atrium.db'}"
    else:
        url = str(request.getfixturevalue("postgres_url"))
    await anyio.to_thread.run_sync(upgrade, url)
    db = Database(build_engine(url))
    async with db.system_session() as session:
        session.add_all([Organization(id=ORG, name="A"), Organization(id=OTHER, name="B")])
    await db.dispose()
    return url


@contextlib.asynccontextmanager
async def process(url: str, index_dir: Path, model: OnnxEmbedder,
                  settings: EmbeddingSettings | None = None) -> AsyncIterator[tuple[KnowledgeService, CountingOnnx]]:
    """A process start: a knowledge service whose embedder is the cache in front of a counted ``model``."""
    counted = CountingOnnx(model)
    fingerprint = model_fingerprint(settings or EmbeddingSettings(dimensions=model.dimensions), model)

    def cache(db: Database, inner: Embedder) -> Embedder:
        return CachingEmbedder(inner, SqlVectorStore(db), fingerprint=fingerprint, query_cache_size=64)

    async with knowledge_service(url, index_dir, counted, SETTINGS, cache=cache) as knowledge:
        yield knowledge, counted


async def stored_vectors(db: Database, tenant: str) -> dict[str, np.ndarray]:
    async with db.tenant_session(tenant) as session:
        rows = (await session.execute(select(Chunk.text, Chunk.embedding).where(Chunk.org_id == tenant))).all()
    return {text: np.frombuffer(raw, dtype=np.float32) for text, raw in rows}


async def test_re_ingesting_or_re_uploading_a_text_never_reaches_the_model_again(
        database_url: str, tmp_path: Path, onnx: OnnxEmbedder) -> None:
    async with process(database_url, tmp_path / "index", onnx) as (knowledge, model):
        first = await knowledge.ingest_text(ORG, "docs", "billing.md", TEXT)
        assert first.status == "created" and first.chunks >= 4
        embedded = list(model.texts["document"])
        assert len(embedded) == first.chunks  # every chunk once

        again = await knowledge.ingest_text(ORG, "docs", "billing.md", TEXT)
        copy = await knowledge.ingest_text(ORG, "docs", "copy-of-billing.md", TEXT)
        moved = await knowledge.ingest_text(ORG, "archive", "billing-2026.md", TEXT)
        assert (again.status, copy.status, moved.status) == ("unchanged", "created", "created")
        assert model.texts["document"] == embedded  # the model saw nothing new

        # A changed document: only its new chunk reaches the model.
        changed = await knowledge.ingest_text(ORG, "docs", "copy-of-billing.md",
                                              TEXT + "\n\nSupport answers within one working day, by email or chat.")
        assert len(model.texts["document"]) == len(embedded) + 1
        # The chunk the change dropped left the cache with it (erasure), though billing.md still holds its text.
        async with knowledge.db.tenant_session(ORG) as session:
            held = set(await session.scalars(select(Chunk.text).where(Chunk.document_id == changed.document_id)))
        dropped = [text for text in embedded if text not in held]
        assert len(dropped) == 1

    # The next process (a restart, or another replica on the same database) reads the same cache.
    async with process(database_url, tmp_path / "index", onnx) as (knowledge, model):
        third = await knowledge.ingest_text(ORG, "docs", "third-copy.md", TEXT)
        assert third.status == "created" and model.texts["document"] == dropped
        hits = await knowledge.search(ORG, PARAGRAPHS[0], mode="vector", limit=3)
        assert hits and hits[0].chunk.text.startswith("Refunds are issued")
        # Cached vectors are the model's vectors, for every copy of a chunk.
        by_text: dict[str, list[np.ndarray]] = {}
        async with knowledge.db.tenant_session(ORG) as session:
            for text, raw in await session.execute(select(Chunk.text, Chunk.embedding).where(Chunk.org_id == ORG)):
                by_text.setdefault(text, []).append(np.frombuffer(raw, dtype=np.float32))
        fresh = await onnx.embed(list(by_text))
        assert sum(len(copies) for copies in by_text.values()) >= 3 * first.chunks
        for copies, vector in zip(by_text.values(), fresh, strict=True):
            for stored in copies:
                assert float(stored @ vector) > 0.9999


async def cached_count(db: Database, tenant: str) -> int:
    async with db.tenant_session(tenant) as session:
        return int(await session.scalar(select(func.count()).select_from(EmbeddingCacheEntry)
                                        .where(EmbeddingCacheEntry.org_id == tenant)) or 0)


async def test_cached_vectors_go_with_the_content_they_were_made_from(database_url: str, tmp_path: Path,
                                                                      onnx: OnnxEmbedder) -> None:
    """Erasure: deleting a document (alone, by collection or by uploader) deletes its texts' cached vectors,
    and so does a change that drops chunks; another tenant's entries for the same texts stay."""
    async with process(database_url, tmp_path / "index", onnx) as (knowledge, model):
        first = await knowledge.ingest_text(ORG, "docs", "billing.md", TEXT)
        await knowledge.ingest_text(OTHER, "docs", "billing.md", TEXT)
        assert await cached_count(knowledge.db, ORG) == first.chunks

        # A change that drops the last paragraph: its chunk's vector goes, the others stay.
        shorter = "\n\n".join(PARAGRAPHS[:-1])
        changed = await knowledge.ingest_text(ORG, "docs", "billing.md", shorter)
        assert changed.status == "replaced" and changed.chunks < first.chunks
        assert await cached_count(knowledge.db, ORG) == changed.chunks

        await knowledge.delete_document(ORG, changed.document_id)
        assert await cached_count(knowledge.db, ORG) == 0
        assert await cached_count(knowledge.db, OTHER) == first.chunks
        # Ingested again after its deletion: the model embeds it again (nothing was kept).
        seen = len(model.texts["document"])
        await knowledge.ingest_text(ORG, "archive", "billing.md", TEXT, user_id=None)
        assert len(model.texts["document"]) == seen + first.chunks
        assert await knowledge.delete_documents(ORG, collection="archive") == 1
        assert await cached_count(knowledge.db, ORG) == 0


async def test_a_question_asked_twice_is_embedded_once(database_url: str, tmp_path: Path,
                                                       onnx: OnnxEmbedder) -> None:
    async with process(database_url, tmp_path / "index", onnx) as (knowledge, model):
        await knowledge.ingest_text(ORG, "docs", "billing.md", TEXT)
        question = "when are refunds issued?"
        first = await knowledge.search(ORG, question, mode="hybrid", limit=2)
        second = await knowledge.search(ORG, question, mode="vector", limit=2)
        assert model.texts["query"] == [question]
        assert first[0].chunk.id == second[0].chunk.id
        await knowledge.search(ORG, "how are invoices sent?", mode="vector", limit=2)
        assert model.texts["query"] == [question, "how are invoices sent?"]
        # Another tenant asking the same question gets its own embedding.
        await knowledge.search(OTHER, question, mode="vector", limit=2)
        assert model.texts["query"] == [question, "how are invoices sent?", question]


async def test_another_tenant_never_reads_these_vectors(database_url: str, tmp_path: Path,
                                                        onnx: OnnxEmbedder) -> None:
    async with process(database_url, tmp_path / "index", onnx) as (knowledge, model):
        first = await knowledge.ingest_text(ORG, "docs", "billing.md", TEXT)
        await knowledge.ingest_text(OTHER, "docs", "billing.md", TEXT)
        assert len(model.texts["document"]) == 2 * first.chunks
        async with knowledge.db.system_session() as session:
            per_tenant = dict((await session.execute(
                select(EmbeddingCacheEntry.org_id, func.count()).group_by(EmbeddingCacheEntry.org_id))).all())
        assert per_tenant == {ORG: first.chunks, OTHER: first.chunks}


async def test_a_change_of_model_re_embeds_with_the_new_model_and_prunes_the_old_vectors(
        database_url: str, tmp_path: Path, onnx: OnnxEmbedder, onnx_256: OnnxEmbedder) -> None:
    async with process(database_url, tmp_path / "index", onnx) as (knowledge, model):
        result = await knowledge.ingest_text(ORG, "docs", "billing.md", TEXT)
        assert len(model.texts["document"]) == result.chunks

    # Same model file and name, vectors of another width: another model for the cache.
    async with process(database_url, tmp_path / "index", onnx_256) as (knowledge, model):
        assert isinstance(knowledge.embedder, CachingEmbedder)
        fingerprint = knowledge.embedder.fingerprint
        assert ("org-a", "docs") in await reembed.stale(knowledge.db, knowledge.embedder.name, 256)
        assert await reembed.reembed_collection(knowledge, ORG, "docs") == result.chunks
        assert len(model.texts["document"]) == result.chunks  # every chunk, by the new model
        stored = await stored_vectors(knowledge.db, ORG)
        assert {vector.shape for vector in stored.values()} == {(256,)}
        fresh = await onnx_256.embed(list(stored))
        for vector, expected in zip(stored.values(), fresh, strict=True):
            assert float(vector @ expected) > 0.9999
        # Both models' entries exist until the next start-up prunes the old one's.
        async with knowledge.db.system_session() as session:
            models = set((await session.execute(select(EmbeddingCacheEntry.model).distinct())).scalars())
        assert len(models) == 2 and fingerprint in models
        store = knowledge.embedder.store
        assert isinstance(store, SqlVectorStore)
        assert await store.prune(fingerprint) == result.chunks
        async with knowledge.db.system_session() as session:
            models = set((await session.execute(select(EmbeddingCacheEntry.model).distinct())).scalars())
        assert models == {fingerprint}


async def test_settings_that_shape_vectors_are_part_of_the_key(database_url: str, tmp_path: Path,
                                                               onnx: OnnxEmbedder) -> None:
    async with process(database_url, tmp_path / "index", onnx) as (knowledge, model):
        await knowledge.ingest_text(ORG, "docs", "billing.md", TEXT)
    # Same name and width (the collection is not stale), another truncation length: not the same vectors.
    short = EmbeddingSettings(max_length=32)
    async with process(database_url, tmp_path / "index", onnx, short) as (knowledge, model):
        copy = await knowledge.ingest_text(ORG, "docs", "copy.md", TEXT)
        assert len(model.texts["document"]) == copy.chunks


async def test_fingerprints_name_the_model_and_its_settings(onnx: OnnxEmbedder, onnx_256: OnnxEmbedder,
                                                           tmp_path: Path) -> None:
    base = model_fingerprint(EmbeddingSettings(), onnx)
    assert base == model_fingerprint(EmbeddingSettings(threads=2, batch_size=8), onnx)  # speed only
    assert base != model_fingerprint(EmbeddingSettings(dimensions=256), onnx_256)
    assert base != model_fingerprint(EmbeddingSettings(query_prefix="query: "), onnx)
    assert base != model_fingerprint(EmbeddingSettings(name="another-name"), onnx)
    # A user's model file: replacing the file's content (same path, same name) is another model.
    from atrium.knowledge.embedders.onnx_minilm import bundled_model_paths

    model_file, tokenizer_file = bundled_model_paths()
    copy, tokenizer = tmp_path / "model.onnx", tmp_path / "tokenizer.json"
    copy.write_bytes(model_file.read_bytes())
    tokenizer.write_bytes(tokenizer_file.read_bytes())
    user = EmbeddingSettings(model_path=copy, tokenizer_path=tokenizer)
    before = model_fingerprint(user, onnx)
    data = bytearray(copy.read_bytes())
    data[-10] ^= 0xFF
    copy.write_bytes(bytes(data))
    assert model_fingerprint(user, onnx) != before
