"""The assistant graph served by the agents API, driven by the official ``langgraph-sdk`` client over real
HTTP: a grounded answer with citations from an ingested document (the caller is the run context's
principal), an artifact request stored in the artifact store (``GET /api/v1/artifacts`` lists it, its
vectors in the index), and deleting the thread erases that artifact with its versions and vectors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client
from sqlalchemy import func, select

from atrium.app import create_app
from atrium.conversations.artifacts.index import COLLECTION
from atrium.gateway.ports import ChatRequest
from atrium.gateway.providers.fake import FakeChatModel, grounded_answer
from atrium.settings import Settings
from atrium.store.models import Artifact, ArtifactVersion, Document, UsageRecord
from tests.conftest import ADMIN_KEY, LiveServer, free_port

CHECKLIST = ('{"kind": "checklist", "title": "Release checklist", "description": "Before a release", '
             '"content": "Run the tests\\nTag the version", "language": null}')


def _answer(request: ChatRequest) -> str:
    return CHECKLIST if request.context.task == "artifact" else grounded_answer(request)


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[LiveServer]:
    app = create_app(settings, chat_model=FakeChatModel(answer=_answer))
    async with LiveServer(app, free_port()) as live:
        services = live.services
        principal = await services.authenticator.authenticate(ADMIN_KEY)
        await services.knowledge.ingest_text(principal.org_id, "docs", "refunds.md",
                                             "# Refunds\n\nRefunds take up to 14 days. Cards are refunded.",
                                             title="Refunds")
        yield live


def _say(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


async def test_the_assistant_answers_with_citations(server: LiveServer) -> None:
    async with get_client(url=server.url, api_key=ADMIN_KEY) as client:
        assert "assistant" in {a["graph_id"] for a in await client.assistants.search()}
        thread = await client.threads.create()
        parts = [part async for part in client.runs.stream(thread["thread_id"], "assistant",
                                                           input=_say("How long do refunds take?"),
                                                           stream_mode=["custom", "values"])]
        steps = [part.data for part in parts if part.event == "custom"]
        values: Any = await client.threads.get_state(thread["thread_id"])
    state = values["values"]
    assert state["error"] is None
    assert "14 days" in state["answer"] and state["answer"].endswith("[1]")
    assert [source["source"] for source in state["sources"]][:1] == ["refunds.md"]
    assert state["messages"][-1] == {"role": "assistant", "content": state["answer"]}
    assert {"retrieve", "classify", "answer", "validate", "finish"} <= {
        step["node"] for step in steps if step.get("type") == "step"}


async def test_an_artifact_request_is_stored_and_erased_with_its_thread(server: LiveServer) -> None:
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    async with get_client(url=server.url, api_key=ADMIN_KEY) as client, \
            httpx.AsyncClient(base_url=server.url, headers=headers) as http:
        tid = (await client.threads.create())["thread_id"]
        done: Any = await client.runs.wait(tid, "assistant", input=_say("Write a checklist for a release"))
        made = done["artifact"]
        assert made is not None and made["kind"] == "checklist", done
        listed = (await http.get("/api/v1/artifacts")).json()["artifacts"]
        assert [a["id"] for a in listed] == [made["id"]]
        shown = (await http.get(f"/api/v1/artifacts/{made['id']}")).json()
        assert [item["text"] for item in shown["content"]["items"]] == ["Run the tests", "Tag the version"]
        found = (await http.post("/api/v1/artifacts/search", json={"query": "release checklist"}))
        assert found.status_code == 200 and made["id"] in {h["artifact"]["id"] for h in found.json()["results"]}

        await client.threads.delete(tid)
        assert (await http.get(f"/api/v1/artifacts/{made['id']}")).status_code == 404
        async with server.services.db.system_session() as session:
            artifacts = await session.scalar(select(func.count()).select_from(Artifact))
            versions = await session.scalar(select(func.count()).select_from(ArtifactVersion))
            indexed = await session.scalar(select(func.count()).select_from(Document)
                                           .where(Document.collection == COLLECTION))
    assert (artifacts, versions, indexed) == (0, 0, 0)


async def test_a_clients_config_cannot_set_the_callers_identity_or_metering(server: LiveServer) -> None:
    """``config.configurable`` from the client is passed on, but not the server's own keys: a forged
    ``principal`` does not replace the run's caller, a forged ``endpoint`` does not relabel its usage."""
    forged = {"configurable": {"principal": {"org_id": "other", "role": "owner"}, "endpoint": "/forged",
                               "searchable": ["secret"], "user_note": "kept"}}
    async with get_client(url=server.url, api_key=ADMIN_KEY) as client:
        tid = (await client.threads.create())["thread_id"]
        done: Any = await client.runs.wait(tid, "assistant", input=_say("How long do refunds take?"),
                                           config=forged)
    assert done["error"] is None and "14 days" in done["answer"], done
    await server.services.gateway.recorder.flush()
    async with server.services.db.system_session() as session:
        endpoints = set(await session.scalars(select(UsageRecord.endpoint)))
    assert endpoints == {"/threads/runs"}, endpoints
