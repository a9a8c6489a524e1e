"""Metering: one usage row per call, with provider usage when given, offline counts when not, and cost."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import select

from atrium.gateway.catalogue import CatalogueEntry
from atrium.gateway.metering import MeteredChatModel, UsageRecorder, UsageRow
from atrium.gateway.ports import CallContext, ChatMessage, ChatRequest
from atrium.gateway.pricing import Price
from atrium.gateway.providers.fake import FakeChatModel
from atrium.gateway.tokens import TokenCounter
from atrium.store.engine import Database, build_engine
from atrium.store.migrate import upgrade
from atrium.store.models import Organization, UsageRecord

PRICE = Price(input_per_1m=2.0, output_per_1m=10.0)
ENTRIES = {"fake": CatalogueEntry(name="fake", provider="up", provider_kind="openai", upstream_model="m",
                                  price=PRICE)}
CONTEXT = CallContext(org_id="org1", user_id="u1", api_key_id="k1", endpoint="/v1/chat/completions")


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    database = Database(build_engine(url))
    async with database.system_session() as session:
        session.add(Organization(id="org1", name="Org"))
    yield database
    await database.dispose()


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    counter = TokenCounter()
    counter.load()
    return counter


async def rows(db: Database) -> list[UsageRecord]:
    async with db.system_session() as session:
        return list((await session.scalars(select(UsageRecord).order_by(UsageRecord.id))).all())


def ask(text: str = "What is the capital of France?") -> ChatRequest:
    return ChatRequest(messages=(ChatMessage("user", text),), context=CONTEXT)


async def test_a_finished_call_is_recorded_with_provider_usage_and_cost(db: Database, counter: TokenCounter) -> None:
    recorder = UsageRecorder(db)
    seen: list[UsageRow] = []
    model = MeteredChatModel(FakeChatModel(answer=lambda _r: "Paris is the capital"), recorder, ENTRIES, counter,
                             observe=seen.append)
    events = [e async for e in model.stream(ask())]
    await recorder.aclose()
    [row] = await rows(db)
    assert (row.org_id, row.user_id, row.api_key_id, row.endpoint) == ("org1", "u1", "k1", "/v1/chat/completions")
    assert (row.model, row.provider, row.outcome, row.estimated) == ("fake", "fake", "ok", False)
    # FakeChatModel reports one token per word, prompt and answer
    assert (row.prompt_tokens, row.completion_tokens) == (6, 4)
    assert row.cost_usd == pytest.approx(PRICE.cost(6, 4))
    assert row.latency_ms > 0 and seen[0].cost_usd == row.cost_usd
    assert events[-1].type == "done"


async def test_a_cut_stream_is_counted_offline_and_priced(db: Database, counter: TokenCounter) -> None:
    recorder = UsageRecorder(db)
    inner = FakeChatModel(answer=lambda _r: "alpha beta gamma delta", fail_after_tokens=2,
                          error_code="upstream_error")
    model = MeteredChatModel(inner, recorder, ENTRIES, counter)
    [e async for e in model.stream(ask())]
    await recorder.aclose()
    [row] = await rows(db)
    assert row.outcome == "upstream_error" and row.estimated
    assert row.completion_tokens == counter.count("alpha beta") == 2
    assert row.prompt_tokens == counter.count_messages(ask().messages) > 0
    assert row.cost_usd == pytest.approx(PRICE.cost(row.prompt_tokens, 2))


async def test_a_cancelled_stream_is_still_recorded(db: Database, counter: TokenCounter) -> None:
    recorder = UsageRecorder(db)
    model = MeteredChatModel(FakeChatModel(answer=lambda _r: "one two three four five"), recorder, ENTRIES,
                             counter)
    stream = model.stream(ask())
    async for event in stream:  # the client goes away after the first token
        if event.type == "token":
            break
    await stream.aclose()  # type: ignore[attr-defined]
    await recorder.aclose()
    [row] = await rows(db)
    assert row.outcome == "cancelled" and row.estimated and row.completion_tokens == 1


async def test_a_failure_before_any_output_costs_nothing(db: Database, counter: TokenCounter) -> None:
    recorder = UsageRecorder(db)
    model = MeteredChatModel(FakeChatModel(fail_before_first=True), recorder, ENTRIES, counter)
    [e async for e in model.stream(ask())]
    await recorder.aclose()
    [row] = await rows(db)
    assert (row.outcome, row.prompt_tokens, row.completion_tokens, row.cost_usd) == ("model_unavailable", 0, 0, 0)


async def test_the_recorder_writes_in_batches_off_the_request_path(db: Database) -> None:
    recorder = UsageRecorder(db, interval_s=0.05)
    for i in range(30):
        recorder.record(UsageRow("org1", None, None, "/e", "p", f"m{i}", 1, 1, 0.0, 1.0, "ok", False))
    assert await rows(db) == []  # nothing written synchronously
    for _ in range(100):
        if len(await rows(db)) == 30:
            break
        await asyncio.sleep(0.02)
    assert len(await rows(db)) == 30
    await recorder.aclose()


def row_of(org_id: str, model: str) -> UsageRow:
    return UsageRow(org_id, None, None, "/e", "p", model, 1, 1, 0.0, 1.0, "ok", False)


async def test_rows_outlive_a_locked_database(tmp_path: Path) -> None:
    """A batch the database cannot take now is kept for the next flush, not dropped."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'm.db'}"
    upgrade(url)
    engine = build_engine(url)

    def short_busy_timeout(connection: Any, _record: Any) -> None:  # fail fast instead of waiting 30 s
        cursor = connection.cursor()
        cursor.execute("PRAGMA busy_timeout=50")
        cursor.close()

    sa_event.listen(engine.sync_engine, "connect", short_busy_timeout)
    db = Database(engine)
    try:
        async with db.system_session() as session:
            session.add(Organization(id="org1", name="Org"))
        recorder = UsageRecorder(db, interval_s=3600)
        for i in range(3):
            recorder.record(row_of("org1", f"m{i}"))
        holder = sqlite3.connect(tmp_path / "m.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another writer holds the database
        try:
            await recorder.flush()
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert await rows(db) == []
        recorder.record(row_of("org1", "m3"))
        await recorder.flush()
        assert [r.model for r in await rows(db)] == ["m0", "m1", "m2", "m3"]
        await recorder.aclose()
    finally:
        await db.dispose()


async def test_rows_the_database_refuses_do_not_hold_back_the_others(db: Database) -> None:
    recorder = UsageRecorder(db, interval_s=3600)
    recorder.record(row_of("org1", "kept-1"))
    recorder.record(row_of("no-such-org", "refused"))  # its organisation is gone: a foreign key refuses it
    recorder.record(row_of("org1", "kept-2"))
    await recorder.flush()
    assert [r.model for r in await rows(db)] == ["kept-1", "kept-2"]
    await recorder.flush()  # nothing kept back to retry
    assert len(await rows(db)) == 2
    await recorder.aclose()
