"""Resumable answer streams (embedded profile: the in-process replay buffer): every SSE event has an id; a
client that lost the stream resumes with ``Last-Event-ID`` and gets the rest, ending with ``done`` or a typed
``error``; an answer no longer buffered comes from the stored message; an abandoned run (its process died)
ends its readers' streams with ``producer_lost`` and its message is marked failed."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from atrium.app import create_app
from atrium.conversations.ports import StreamEntry
from atrium.conversations.replay import stream_name
from atrium.conversations.repository import finish_message
from atrium.gateway.providers.fake import FakeChatModel
from atrium.settings import Settings
from atrium.store.models import Message, new_id
from tests.api.helpers import ingest
from tests.api.stream_helpers import parse_events, read_events, resume_path, stream_settings, tokens_of
from tests.conftest import ADMIN_KEY, LiveServer, RunningApp, free_port

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return stream_settings(tmp_path / "data")


async def _message(services: Any, message_id: str) -> Message:
    async with services.db.system_session() as session:
        row = await session.get(Message, message_id)
    assert row is not None
    return row


async def test_a_client_resumes_mid_stream_with_last_event_id(settings: Settings) -> None:
    # About a second of tokens, twice the lease: the run's heartbeat must keep it alive.
    app = create_app(settings, chat_model=FakeChatModel(token_delay=0.1))
    async with LiveServer(app, free_port()) as server, \
            httpx.AsyncClient(base_url=server.url, headers=AUTH, timeout=30) as client:
        await ingest(client)
        async with client.stream("POST", "/api/v1/chat/ask",
                                 json={"message": "How long do refunds take?", "stream": True}) as response:
            first = await read_events(response, until=lambda seen: sum(e.name == "token" for e in seen) == 2)
        assert [event.id for event in first] == [1, 2, 3] and first[0].name == "meta"
        meta = first[0].data
        resumed = await client.get(resume_path(meta), headers={"Last-Event-ID": str(first[-1].id)})
        assert resumed.status_code == 200 and resumed.headers["content-type"].startswith("text/event-stream")
        rest = parse_events(resumed.text)
        assert [event.id for event in rest] == list(range(4, 4 + len(rest)))
        assert [event.name for event in rest][-2:] == ["sources", "done"]
        done = rest[-1].data
        assert tokens_of(first) + tokens_of(rest) == done["answer"]
        assert "14 days" in done["answer"] and done["message_id"] == meta["message_id"]
        stored = await _message(server.services, meta["message_id"])
        assert (stored.status, stored.content) == ("complete", done["answer"])
        # From the start, by query parameter: the whole stream, as the first client would have had it.
        again = parse_events((await client.get(resume_path(meta), params={"last_event_id": 0})).text)
        assert [event.id for event in again] == list(range(1, rest[-1].id + 1))
        assert again[0].data == meta and again[-1].data == done
        # The header wins over the query parameter (an EventSource reconnects to the same URL).
        tail = parse_events((await client.get(resume_path(meta), params={"last_event_id": 0},
                                              headers={"Last-Event-ID": str(rest[-2].id)})).text)
        assert [event.name for event in tail] == ["done"]


async def test_every_event_of_an_answer_has_the_next_id(running: RunningApp) -> None:
    await ingest(running.client)
    response = await running.client.post("/api/v1/chat/ask", json={"message": "refunds?", "stream": True})
    events = parse_events(response.text)
    assert [event.id for event in events] == list(range(1, len(events) + 1))
    assert events[0].name == "meta" and events[-1].name == "done"


async def test_an_answer_no_longer_buffered_is_answered_from_the_stored_message(running: RunningApp) -> None:
    await ingest(running.client)
    answer = (await running.client.post("/api/v1/chat/ask", json={"message": "How long do refunds take?"})).json()
    await running.services.runs.drain(5)  # the run has journaled its last events
    await running.services.streams.log.aclose()  # the buffer forgets every stream (as if expired)
    response = await running.client.get(resume_path(answer), headers={"Last-Event-ID": "5"})
    events = parse_events(response.text)
    assert [(event.id, event.name) for event in events] == [(6, "sources"), (7, "done")], events
    assert events[1].data["answer"] == answer["answer"] and events[1].data["model"] == "fake"
    assert events[0].data["sources"] == answer["sources"]


async def _pending_answer(running: RunningApp, conversation_id: str, *, age_s: float = 60,
                          message_id: str | None = None) -> str:
    """An assistant message left ``pending`` by a run that is gone (no lease), or, young, by a run of
    another process (the embedded buffer cannot see it)."""
    org_id = (await running.client.get("/api/v1/admin/org")).json()["id"]
    async with running.services.db.system_session() as session:
        row = Message(id=message_id or new_id(), org_id=org_id, conversation_id=conversation_id, role="assistant",
                      content="", status="pending", created_at=datetime.now(UTC) - timedelta(seconds=age_s))
        session.add(row)
        await session.flush()
        return row.id


async def test_an_abandoned_run_ends_with_producer_lost_and_fails_its_message(running: RunningApp) -> None:
    conversation = (await running.client.post("/api/v1/chat/ask", json={"message": "hello"})).json()
    org_id = (await running.client.get("/api/v1/admin/org")).json()["id"]
    message_id = new_id()
    ids = {"conversation_id": conversation["conversation_id"], "message_id": message_id}
    # What the run journaled before its process died: no final event, and its lease has lapsed.
    await running.services.streams.log.append(stream_name(org_id, message_id), [
        StreamEntry(1, "meta", {**ids, "user_message_id": "u"}), StreamEntry(2, "token", {"text": "Partial"}),
        StreamEntry(3, "token", {"text": " answer"})])
    await _pending_answer(running, conversation["conversation_id"], message_id=message_id)
    response = await running.client.get(resume_path(ids), headers={"Last-Event-ID": "2"})
    events = parse_events(response.text)
    assert [(event.id, event.name) for event in events] == [(3, "token"), (4, "error")]
    assert events[-1].data == {"code": "producer_lost", "message": events[-1].data["message"], **ids}
    stored = await _message(running.services, message_id)
    assert (stored.status, stored.content, stored.error["code"]) == ("error", "Partial answer", "producer_lost")
    # The final error is in the buffer now: every later reader ends the same way.
    again = parse_events((await running.client.get(resume_path(ids))).text)
    assert [event.name for event in again] == ["meta", "token", "token", "error"]
    listed = (await running.client.get(f"/api/v1/conversations/{ids['conversation_id']}/messages")).json()
    assert next(m for m in listed["messages"] if m["id"] == message_id)["status"] == "error"


async def test_a_pending_answer_without_any_buffer_fails_at_once(running: RunningApp) -> None:
    """The embedded profile after a crash: the process that buffered the stream is gone."""
    conversation = (await running.client.post("/api/v1/chat/ask", json={"message": "hello"})).json()
    message_id = await _pending_answer(running, conversation["conversation_id"])
    ids = {"conversation_id": conversation["conversation_id"], "message_id": message_id}
    events = parse_events((await running.client.get(resume_path(ids), headers={"Last-Event-ID": "7"})).text)
    assert [(event.id, event.name, event.data["code"]) for event in events] == [(8, "error", "producer_lost")]
    assert (await _message(running.services, message_id)).status == "error"


async def test_an_answer_another_process_produces_is_waited_for_not_failed(running: RunningApp) -> None:
    """Embedded: an answer asked after this process started, with no events in its buffer, may be produced
    by another process (``atrium ask``): the reader waits for it to be stored, however long it takes."""
    conversation = (await running.client.post("/api/v1/chat/ask", json={"message": "hello"})).json()
    message_id = await _pending_answer(running, conversation["conversation_id"], age_s=0)
    ids = {"conversation_id": conversation["conversation_id"], "message_id": message_id}
    reader = asyncio.create_task(running.client.get(resume_path(ids), headers={"Last-Event-ID": "9"}))
    await asyncio.sleep(3 * running.services.settings.streams.lease_s)
    assert not reader.done()
    assert (await _message(running.services, message_id)).status == "pending"  # the reaper left it alone too
    org_id = (await running.client.get("/api/v1/admin/org")).json()["id"]
    async with running.services.db.tenant_session(org_id) as session:
        assert await finish_message(session, org_id, message_id, status="complete", content="Elsewhere.",
                                    model="fake", sources=[], usage={"total_tokens": 1})
    events = parse_events((await asyncio.wait_for(reader, 10)).text)
    assert [(event.id, event.name) for event in events] == [(10, "sources"), (11, "done")]
    assert events[-1].data["answer"] == "Elsewhere."


async def test_an_abandoned_answer_nobody_reads_is_failed_all_the_same(running: RunningApp) -> None:
    conversation = (await running.client.post("/api/v1/chat/ask", json={"message": "hello"})).json()
    message_id = await _pending_answer(running, conversation["conversation_id"])
    path = f"/api/v1/conversations/{conversation['conversation_id']}/messages"
    for _ in range(100):
        listed = {m["id"]: m for m in (await running.client.get(path)).json()["messages"]}
        if listed[message_id]["status"] != "pending":
            break
        await asyncio.sleep(0.05)
    assert listed[message_id]["status"] == "error" and listed[message_id]["error"]["code"] == "producer_lost"


async def test_resuming_needs_an_answer_of_ones_own_conversation(running: RunningApp) -> None:
    answer = (await running.client.post("/api/v1/chat/ask", json={"message": "hello"})).json()
    conversation, message = answer["conversation_id"], answer["message_id"]
    for path in (f"/api/v1/conversations/{conversation}/messages/nope/stream",
                 f"/api/v1/conversations/nope/messages/{message}/stream",
                 f"/api/v1/conversations/{conversation}/messages/{answer['user_message_id']}/stream"):
        response = await running.client.get(path)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found", path
    bad = await running.client.get(resume_path(answer), headers={"Last-Event-ID": "seven"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_request"
    negative = await running.client.get(resume_path(answer), params={"last_event_id": -1})
    assert negative.status_code == 422
