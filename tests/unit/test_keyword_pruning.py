"""SQLite keyword search drops a query's commonest terms when BM25 would have to score too many rows."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from atrium.knowledge.keyword import SqliteKeywordSearch, prune_terms
from atrium.store.engine import Database, build_engine
from atrium.store.migrate import upgrade
from tests.contract.test_keyword_contract import seed


def test_prune_terms_keeps_the_rarest_within_the_budget_in_query_order() -> None:
    terms = ["how", "configure", "logging", "the"]
    postings = [9_000, 300, 120, 40_000]
    assert prune_terms(terms, postings, 10_000) == ["how", "configure", "logging"]
    assert prune_terms(terms, postings, 1_000) == ["configure", "logging"]
    assert prune_terms(terms, postings, 100_000) == terms
    # The rarest term is kept even when it alone is over the budget.
    assert prune_terms(terms, postings, 10) == ["logging"]
    # A common term is skipped but a rarer one after it still fits.
    assert prune_terms(["a", "b", "c"], [50, 900, 100], 200) == ["a", "c"]


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'k.db'}"
    await anyio.to_thread.run_sync(upgrade, url)
    database = Database(build_engine(url))
    try:
        yield database
    finally:
        await database.dispose()


async def test_a_common_word_is_dropped_and_cannot_rank_its_rows(db: Database) -> None:
    # "setup" is in 30 of 31 chunks, "refund" in one: with a budget of 10 rows only "refund" is searched,
    # so the 30 chunks that match only "setup" are not candidates at all.
    texts = {f"setup-{i}": f"setup step {i} of the installer setup" for i in range(30)}
    texts["refund"] = "refund policy and setup"
    ids = await seed(db, "org-a", "docs", texts)
    pruned, full = SqliteKeywordSearch(max_postings=10), SqliteKeywordSearch()
    async with db.system_session() as session:
        pruned_hits = await pruned.search(session, "org-a", None, "setup refund", 50)
        full_hits = await full.search(session, "org-a", None, "setup refund", 50)
    assert [chunk_id for chunk_id, _ in pruned_hits] == [ids["refund"]]
    assert len(full_hits) == 31 and full_hits[0][0] == ids["refund"]
    # The counts are remembered: a second search asks the database for no new count.
    assert set(pruned._postings) == {"setup", "refund"}
    assert pruned._postings["setup"][1] == 31 and pruned._postings["refund"][1] == 1


async def test_counts_expire(db: Database) -> None:
    await seed(db, "org-a", "docs", {"a": "alpha beta", "b": "beta gamma"})
    searcher = SqliteKeywordSearch(max_postings=10, postings_ttl_s=0.0)
    async with db.system_session() as session:
        await searcher.search(session, "org-a", None, "alpha beta", 10)
        assert searcher._postings["beta"][1] == 2
    await seed(db, "org-a", "docs", {"c": "beta delta"})
    async with db.system_session() as session:
        await searcher.search(session, "org-a", None, "alpha beta", 10)
        assert searcher._postings["beta"][1] == 3
