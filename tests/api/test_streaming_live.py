"""Over real HTTP (uvicorn on loopback): an answer survives the client disconnecting mid-stream, and a
shutdown mid-answer stores the partial text as an error instead of losing it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from atrium.app import create_app
from atrium.gateway.providers.fake import FakeChatModel
from atrium.settings import Settings
from atrium.store.models import Message
from tests.api.helpers import ingest
from tests.conftest import ADMIN_KEY, LiveServer, free_port, make_settings

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


async def _assistant(server: LiveServer, message_id: str) -> Message:
    async with server.services.db.system_session() as session:
        row = await session.get(Message, message_id)
    assert row is not None
    return row


async def test_answer_is_stored_when_the_client_disconnects(settings: Settings) -> None:
    model = FakeChatModel(token_delay=0.03)
    app = create_app(settings, chat_model=model)
    async with LiveServer(app, free_port()) as server, httpx.AsyncClient(base_url=server.url, headers=AUTH) as client:
        await ingest(client)
        message_id = None
        async with client.stream("POST", "/api/v1/chat/ask", json={"message": "How long do refunds take?",
                                                                  "stream": True}) as response:
            async for line in response.aiter_lines():
                if line.startswith("data:") and '"message_id"' in line and message_id is None:
                    message_id = line.split('"message_id": "')[1].split('"')[0]
                if line.startswith("event: token"):
                    break  # hang up after the first token
        assert message_id is not None
        assert (await _assistant(server, message_id)).status == "pending"
        for _ in range(200):
            row = await _assistant(server, message_id)
            if row.status != "pending":
                break
            await asyncio.sleep(0.05)
        assert row.status == "complete"
        assert "14 days" in row.content and "[1]" in row.content
        assert row.sources and row.sources[0]["cited"]


@pytest.fixture
def short_grace(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data", server={"shutdown_grace_s": 0.3})


async def test_shutdown_mid_answer_keeps_the_partial_answer(short_grace: Settings) -> None:
    settings = short_grace
    app = create_app(settings, chat_model=FakeChatModel(token_delay=0.4))
    server = LiveServer(app, free_port())
    await server.__aenter__()
    async with httpx.AsyncClient(base_url=server.url, headers=AUTH) as client:
        await ingest(client)
        response = await client.post("/api/v1/query", json={"question": "How long do refunds take?", "wait": False})
        record_id = response.json()["id"]
        await asyncio.sleep(1.0)  # a few tokens in; the whole answer would take several seconds
    await server.__aexit__()
    app2 = create_app(settings, chat_model=FakeChatModel())
    async with LiveServer(app2, free_port()) as again, httpx.AsyncClient(base_url=again.url, headers=AUTH) as client:
        record = (await client.get(f"/api/v1/query/{record_id}")).json()
    assert record["status"] == "error"
    assert record["error"]["code"] == "interrupted"
    assert record["answer"] and "14 days" not in record["answer"]
