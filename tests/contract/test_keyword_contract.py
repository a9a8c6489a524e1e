"""One contract for the KeywordSearch port, run over SQLite FTS5 and PostgreSQL full text."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from atrium.knowledge.keyword import PostgresKeywordSearch, SqliteKeywordSearch, query_terms
from atrium.knowledge.ports import KeywordSearch
from atrium.store.engine import Database, build_engine
from atrium.store.migrate import upgrade
from atrium.store.models import Chunk, Document, Organization

TEXTS = {
    "refunds": "Refunds are issued within fourteen days of purchase.",
    "invoices": "Invoices are emailed on the first day of the month.",
    "kubernetes": "The helm chart deploys three replicas behind an ingress.",
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Database, KeywordSearch]]:
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'k.db'}"
        searcher: KeywordSearch = SqliteKeywordSearch()
    else:
        url = request.getfixturevalue("postgres_url")
        searcher = PostgresKeywordSearch()
    await anyio.to_thread.run_sync(upgrade, url)
    db = Database(build_engine(url))
    try:
        yield db, searcher
    finally:
        await db.dispose()


async def seed(db: Database, org: str, collection: str, texts: dict[str, str]) -> dict[str, int]:
    ids: dict[str, int] = {}
    async with db.system_session() as session:
        if await session.get(Organization, org) is None:
            session.add(Organization(id=org, name=org))
            await session.flush()
        for name, body in texts.items():
            document = Document(org_id=org, collection=collection, source=name, title=name, content_hash=name)
            session.add(document)
            await session.flush()
            chunk = Chunk(org_id=org, document_id=document.id, collection=collection, ordinal=0, heading=name,
                          text=body, token_count=len(body.split()), embedding=b"")
            session.add(chunk)
            await session.flush()
            ids[name] = chunk.id
    return ids


async def run(db: Database, searcher: KeywordSearch, org: str, query: str, collections: list[str] | None = None,
              limit: int = 10) -> list[int]:
    async with db.system_session() as session:
        return [chunk_id for chunk_id, _ in await searcher.search(session, org, collections, query, limit)]


async def test_best_match_first_and_scores_descending(backend: tuple[Database, KeywordSearch]) -> None:
    db, searcher = backend
    ids = await seed(db, "org-a", "docs", TEXTS)
    async with db.system_session() as session:
        hits = await searcher.search(session, "org-a", None, "when are refunds issued", 10)
    assert hits[0][0] == ids["refunds"]
    scores = [score for _, score in hits]
    assert scores == sorted(scores, reverse=True)


async def test_stemming_matches_word_forms(backend: tuple[Database, KeywordSearch]) -> None:
    db, searcher = backend
    ids = await seed(db, "org-a", "docs", TEXTS)
    assert (await run(db, searcher, "org-a", "replica deploying"))[0] == ids["kubernetes"]


async def test_query_syntax_is_inert(backend: tuple[Database, KeywordSearch]) -> None:
    db, searcher = backend
    ids = await seed(db, "org-a", "docs", TEXTS)
    for hostile in ['"refunds', "refunds OR", "NEAR(refunds", "refunds*", "refunds) | (", "-refunds", "'; DROP"]:
        found = await run(db, searcher, "org-a", hostile)
        if "refunds" in hostile:
            assert found and found[0] == ids["refunds"], hostile
    assert await run(db, searcher, "org-a", "!!! ??? ...") == []


async def test_tenant_and_collection_scoping(backend: tuple[Database, KeywordSearch]) -> None:
    db, searcher = backend
    a = await seed(db, "org-a", "docs", TEXTS)
    b = await seed(db, "org-b", "docs", {"refunds": "Refunds for org b are never issued."})
    faq = await seed(db, "org-a", "faq", {"refunds-faq": "Refunds questions are answered here."})
    assert set(await run(db, searcher, "org-b", "refunds")) == {b["refunds"]}
    assert b["refunds"] not in await run(db, searcher, "org-a", "refunds")
    assert await run(db, searcher, "org-a", "refunds", ["faq"]) == [faq["refunds-faq"]]
    assert set(await run(db, searcher, "org-a", "refunds", ["docs", "faq"])) == {a["refunds"], faq["refunds-faq"]}
    assert await run(db, searcher, "org-c", "refunds") == []


async def test_limit_is_respected(backend: tuple[Database, KeywordSearch]) -> None:
    db, searcher = backend
    await seed(db, "org-a", "docs", {f"d{i}": f"common word number {i}" for i in range(8)})
    assert len(await run(db, searcher, "org-a", "common", limit=3)) == 3


def test_query_terms_are_plain_words() -> None:
    assert query_terms('How do I "add" an OpenAI provider? OR NEAR(x)') == [
        "how", "do", "add", "an", "openai", "provider", "or", "near"]
