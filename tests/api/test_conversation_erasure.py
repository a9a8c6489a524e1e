"""Deleting a conversation erases what it holds, checked in the raw tables and stores after the DELETE, on
SQLite and on PostgreSQL (a normal role under RLS): its messages, its change-log entries but the tombstone
(which ``/api/v1/sync`` still answers), its artifacts with every version and their vectors, the replay
streams of its answers, and the agent thread tied to it with its runs and checkpoints. The admin's
audited erase does the same."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from blockbuster import BlockBuster
from sqlalchemy import func, select

from atrium.app import create_app
from atrium.conversations.artifacts.index import COLLECTION
from atrium.conversations.replay import stream_name
from atrium.gateway.providers.fake import FakeChatModel
from atrium.settings import Settings
from atrium.store.models import (
    AgentRun,
    AgentThread,
    Artifact,
    ArtifactVersion,
    Change,
    Chunk,
    Document,
    Message,
)
from tests.agent_tables import checkpoint_rows
from tests.api.authz_helpers import BACKENDS, backend_settings
from tests.conftest import ADMIN_KEY, LiveServer, free_port

CHECKLIST = {"items": [{"text": "Refund the card", "done": False}]}


@pytest.fixture(scope="module", params=BACKENDS)
async def any_backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    backend: str = request.param
    return await backend_settings(request, tmp_path_factory.mktemp(f"erasure-{backend}") / "data", backend)


@contextlib.asynccontextmanager
async def _served(settings: Settings, guard: BlockBuster) -> AsyncIterator[tuple[LiveServer, httpx.AsyncClient]]:
    server = LiveServer(create_app(settings, chat_model=FakeChatModel()), free_port())
    guard.deactivate()  # start-up outside the guard (asyncpg's blocking ~/.pgpass lookup)
    try:
        await server.__aenter__()
    finally:
        guard.activate()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=30,
                                     headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as http:
            yield server, http
    finally:
        await server.__aexit__()


async def _filled_conversation(server: LiveServer, http: httpx.AsyncClient) -> dict[str, Any]:
    """A conversation with an answer, an artifact and a tied agent thread that has run; what it holds."""
    principal = await server.services.authenticator.authenticate(ADMIN_KEY)
    await server.services.knowledge.ingest_text(principal.org_id, "docs", "refunds.md",
                                                "# Refunds\n\nRefunds take up to 14 days.", title="Refunds")
    asked = (await http.post("/api/v1/chat/ask", json={"message": "How long do refunds take?"})).json()
    cid = asked["conversation_id"]
    artifact = (await http.post("/api/v1/artifacts", json={"kind": "checklist", "title": "Refund steps",
                                                           "content": CHECKLIST, "conversation_id": cid})).json()
    await http.patch(f"/api/v1/artifacts/{artifact['id']}", json={"title": "Refund steps, v2"})
    thread = (await http.post("/threads", json={"metadata": {"conversation_id": cid}})).json()
    run = await http.post(f"/threads/{thread['thread_id']}/runs/wait",
                          json={"assistant_id": "echo", "input": {"messages": [{"role": "user", "content": "Hi"}]}})
    assert run.status_code == 200, run.text
    stream = stream_name(principal.org_id, asked["message_id"])
    assert await server.services.streams.log.read(stream)
    assert await checkpoint_rows(server.services.settings, "checkpoints", thread["thread_id"])
    return {"cid": cid, "artifact": artifact["id"], "thread": thread["thread_id"], "stream": stream,
            "org": principal.org_id}


async def _left(server: LiveServer, held: dict[str, Any]) -> dict[str, Any]:
    async with server.services.db.system_session() as session:
        def count(model: Any, *where: Any) -> Any:
            return session.scalar(select(func.count()).select_from(model).where(*where))
        left = {
            "messages": await count(Message, Message.conversation_id == held["cid"]),
            "changes": [(row.entity, row.op) for row in await session.scalars(
                select(Change).where(Change.conversation_id == held["cid"]))],
            "artifacts": await count(Artifact, Artifact.id == held["artifact"]),
            "versions": await count(ArtifactVersion, ArtifactVersion.artifact_id == held["artifact"]),
            "indexed": await count(Document, Document.collection == COLLECTION, Document.source == held["artifact"]),
            "chunks": await count(Chunk, Chunk.collection == COLLECTION),
            "threads": await count(AgentThread, AgentThread.id == held["thread"]),
            "runs": await count(AgentRun, AgentRun.thread_id == held["thread"]),
        }
    left["vectors"] = len(await server.services.index.ids(held["org"], COLLECTION))
    left["stream"] = await server.services.streams.log.read(held["stream"])
    settings = server.services.settings
    left["checkpoints"] = [row for kind in ("checkpoints", "writes", "blobs")
                           for row in await checkpoint_rows(settings, kind, held["thread"])]
    return left


NOTHING = {"messages": 0, "changes": [("conversation", "delete")], "artifacts": 0, "versions": 0, "indexed": 0,
           "chunks": 0, "vectors": 0,
           "threads": 0, "runs": 0, "stream": [], "checkpoints": []}


async def test_deleting_a_conversation_erases_what_it_holds(any_backend: Settings, blockbuster: BlockBuster) -> None:
    async with _served(any_backend, blockbuster) as (server, http):
        held = await _filled_conversation(server, http)
        before = await _left(server, held)
        assert before["messages"] == 2 and before["versions"] == 2 and before["indexed"] == 1
        assert before["chunks"] >= 1 and before["vectors"] == before["chunks"]
        assert (await http.delete(f"/api/v1/conversations/{held['cid']}")).status_code == 204
        assert await _left(server, held) == NOTHING
        synced = (await http.get("/api/v1/sync")).json()["changes"]
        assert [(c["entity"], c["id"], c["op"]) for c in synced] == [("conversation", held["cid"], "delete")]
        assert (await http.get(f"/api/v1/artifacts/{held['artifact']}")).status_code == 404
        assert (await http.get(f"/threads/{held['thread']}")).status_code == 404


async def test_the_admin_erase_erases_as_much(settings: Settings, blockbuster: BlockBuster) -> None:
    async with _served(settings, blockbuster) as (server, http):
        held = await _filled_conversation(server, http)
        assert (await http.delete(f"/api/v1/admin/conversations/{held['cid']}")).status_code == 204
        assert await _left(server, held) == NOTHING
