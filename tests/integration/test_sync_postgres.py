"""``GET /api/v1/sync`` on PostgreSQL, where writers run side by side: a change of a transaction still
running is held back, and the cursor never passes it, even when it got the lower sequence number."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from atrium.conversations import changes
from atrium.store.models import Conversation
from tests.conftest import make_settings, run_app

pytestmark = pytest.mark.integration


async def test_a_change_committed_late_is_never_skipped(tmp_path: Path, postgres_url: str) -> None:
    async with run_app(make_settings(tmp_path / "data", database_url=postgres_url)) as running:
        client, db = running.client, running.services.db
        answer = (await client.post("/api/v1/chat/ask", json={"message": "hello"})).json()
        cursor = (await client.get("/api/v1/sync")).json()["next_cursor"]
        early_scope = db.system_session()  # B: takes its transaction id first
        early = await early_scope.__aenter__()
        await early.execute(text("SELECT pg_current_xact_id()"))
        async with db.system_session() as late:  # A: a later transaction id, but the lower seq
            conversation = await late.get(Conversation, answer["conversation_id"])
            assert conversation is not None
            changes.record(late, conversation, "message", answer["user_message_id"], "upsert")
            await late.flush()
            mine = await early.get(Conversation, answer["conversation_id"])
            assert mine is not None
            changes.record(early, mine, "message", answer["message_id"], "upsert")
            await early.flush()
            await early_scope.__aexit__(None, None, None)  # B commits; A is still running
            page = (await client.get("/api/v1/sync", params={"cursor": cursor})).json()
            assert [change["id"] for change in page["changes"]] == [answer["message_id"]]
            cursor = page["next_cursor"]
            # A third writer that began after A (a rename): held back while A runs.
            await client.patch(f"/api/v1/conversations/{answer['conversation_id']}", json={"title": "Later"})
            held = (await client.get("/api/v1/sync", params={"cursor": cursor})).json()
            assert held["changes"] == [] and held["next_cursor"] == cursor
        page = (await client.get("/api/v1/sync", params={"cursor": cursor})).json()
        assert [(change["entity"], change["id"]) for change in page["changes"]] == [
            ("message", answer["user_message_id"]), ("conversation", answer["conversation_id"])]
