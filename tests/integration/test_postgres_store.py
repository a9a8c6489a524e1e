"""The schema and the main flows on real PostgreSQL: migrations up and down, keyword search via tsvector,
ingest -> search -> chat through the API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import httpx
import pytest
from sqlalchemy import text

from atrium.store.engine import Database, build_engine
from atrium.store.migrate import alembic_config
from tests.api.helpers import ingest
from tests.conftest import ADMIN_KEY, RunningApp, make_settings, start_app

pytestmark = pytest.mark.integration


async def test_migrations_upgrade_and_downgrade_on_postgres(postgres_url: str) -> None:
    from alembic import command

    config = alembic_config(postgres_url)
    await anyio.to_thread.run_sync(command.upgrade, config, "head")
    db = Database(build_engine(postgres_url))
    try:
        async with db.system_session() as session:
            tables = set((await session.scalars(text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))).all())
            assert {"organizations", "users", "api_keys", "conversations", "messages", "documents", "chunks",
                    "jobs", "usage", "queries", "knowledge_revisions"} <= tables
            generated = await session.scalar(text(
                "SELECT is_generated FROM information_schema.columns WHERE table_name='chunks' AND column_name='tsv'"))
            assert generated == "ALWAYS"
        await anyio.to_thread.run_sync(command.downgrade, config, "base")
        async with db.system_session() as session:
            left = set((await session.scalars(text(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))).all())
            assert left <= {"alembic_version"}
    finally:
        await db.dispose()


@pytest.fixture
async def pg_running(tmp_path: Path, postgres_url: str) -> AsyncIterator[RunningApp]:
    settings = make_settings(tmp_path / "data", database_url=postgres_url)
    app, lifespan = await start_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://atrium.test",
                                 headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
        try:
            yield RunningApp(app, client)
        finally:
            await lifespan.__aexit__(None, None, None)


async def test_ingest_search_and_chat_on_postgres(pg_running: RunningApp) -> None:
    client = pg_running.client
    await ingest(client)
    for mode in ("keyword", "vector", "hybrid"):
        response = await client.post("/api/v1/search/semantic", json={"query": "refunds within days", "mode": mode})
        assert response.status_code == 200, response.text
        assert response.json()["results"][0]["source"] == "billing.md", mode
    answer = (await client.post("/api/v1/chat/ask", json={"message": "How long do refunds take?"})).json()
    assert "14 days" in answer["answer"] and answer["sources"][0]["cited"]
    record = (await client.post("/api/v1/query", json={"question": "When are invoices emailed?"})).json()
    assert record["status"] == "complete"
    messages = (await client.get(f"/api/v1/conversations/{answer['conversation_id']}/messages")).json()
    assert [m["role"] for m in messages["messages"]] == ["user", "assistant"]
