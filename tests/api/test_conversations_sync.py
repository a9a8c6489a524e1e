"""Conversations: rename, messages a page at a time by an opaque cursor; ``GET /api/v1/sync``: every change
of one's conversations and messages since a cursor."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from tests.api.helpers import ingest
from tests.conftest import RunningApp, make_settings, run_app


async def _conversation(running: RunningApp, turns: int) -> dict[str, Any]:
    answer: dict[str, Any] = {}
    for turn in range(turns):
        answer = (await running.client.post("/api/v1/chat/ask", json={
            "message": f"Question {turn}: how long do refunds take?",
            "conversation_id": answer.get("conversation_id")})).json()
    return answer


async def test_a_conversation_is_renamed(running: RunningApp) -> None:
    conversation_id = (await _conversation(running, 1))["conversation_id"]
    path = f"/api/v1/conversations/{conversation_id}"
    renamed = await running.client.patch(path, json={"title": "  Refund   questions "})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["title"] == "Refund questions" and renamed.json()["id"] == conversation_id
    assert (await running.client.get(path)).json()["title"] == "Refund questions"
    for body in ({"title": "   "}, {"title": ""}, {"title": "x" * 201}, {"title": "ok", "pinned": True}, {}):
        assert (await running.client.patch(path, json=body)).status_code == 422, body
    missing = await running.client.patch("/api/v1/conversations/nope", json={"title": "t"})
    assert missing.status_code == 404


async def test_messages_come_a_page_at_a_time_by_cursor(running: RunningApp) -> None:
    conversation_id = (await _conversation(running, 3))["conversation_id"]
    path = f"/api/v1/conversations/{conversation_id}/messages"
    everything = (await running.client.get(path)).json()
    assert len(everything["messages"]) == 6 and everything["next_cursor"] is None  # the old answer, unchanged
    first = (await running.client.get(path, params={"limit": 4})).json()
    assert [m["id"] for m in first["messages"]] == [m["id"] for m in everything["messages"][:4]]
    assert first["next_cursor"]
    second = (await running.client.get(path, params={"limit": 4, "cursor": first["next_cursor"]})).json()
    assert [m["id"] for m in second["messages"]] == [m["id"] for m in everything["messages"][4:]]
    assert second["next_cursor"] is None
    exact = (await running.client.get(path, params={"limit": 3})).json()
    rest = (await running.client.get(path, params={"limit": 3, "cursor": exact["next_cursor"]})).json()
    assert len(rest["messages"]) == 3 and rest["next_cursor"]
    assert (await running.client.get(path, params={"cursor": rest["next_cursor"]})).json() == {
        "messages": [], "next_cursor": None}
    # A new turn after the last page: the same cursor goes on from where it was.
    await running.client.post("/api/v1/chat/ask", json={"message": "And invoices?", "conversation_id": conversation_id})
    newer = (await running.client.get(path, params={"cursor": rest["next_cursor"]})).json()
    assert [m["role"] for m in newer["messages"]] == ["user", "assistant"]
    offset = (await running.client.get(path, params={"limit": 2, "offset": 2})).json()
    assert [m["id"] for m in offset["messages"]] == [m["id"] for m in everything["messages"][2:4]]
    assert offset["next_cursor"]


async def test_a_bad_cursor_is_a_422(running: RunningApp) -> None:
    first = (await _conversation(running, 2))["conversation_id"]
    other = (await _conversation(running, 1))["conversation_id"]
    cursor = (await running.client.get(f"/api/v1/conversations/{first}/messages",
                                       params={"limit": 1})).json()["next_cursor"]
    for params in ({"cursor": "not-a-cursor"}, {"cursor": "e30"}, {"cursor": cursor, "offset": 1}):
        response = await running.client.get(f"/api/v1/conversations/{first}/messages", params=params)
        assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_request", params
    elsewhere = await running.client.get(f"/api/v1/conversations/{other}/messages", params={"cursor": cursor})
    assert elsewhere.status_code == 422
    assert (await running.client.get("/api/v1/sync", params={"cursor": cursor})).status_code == 422


async def test_sync_returns_every_change_since_the_cursor(running: RunningApp) -> None:
    await ingest(running.client)
    initial = (await running.client.get("/api/v1/sync")).json()
    assert initial["changes"] == [] and not initial["has_more"]
    answer = await _conversation(running, 1)
    conversation_id = answer["conversation_id"]
    first = (await running.client.get("/api/v1/sync", params={"cursor": initial["next_cursor"]})).json()
    listed = {(change["entity"], change["id"]): change for change in first["changes"]}
    assert set(listed) == {("conversation", conversation_id), ("message", answer["user_message_id"]),
                           ("message", answer["message_id"])}
    assert all(change["op"] == "upsert" for change in first["changes"])
    assert listed[("message", answer["message_id"])]["message"]["content"] == answer["answer"]
    assert listed[("message", answer["message_id"])]["message"]["status"] == "complete"
    assert listed[("conversation", conversation_id)]["conversation"]["id"] == conversation_id
    # Nothing new: no change, and the same cursor.
    idle = (await running.client.get("/api/v1/sync", params={"cursor": first["next_cursor"]})).json()
    assert idle == {"changes": [], "next_cursor": first["next_cursor"], "has_more": False}
    await running.client.patch(f"/api/v1/conversations/{conversation_id}", json={"title": "Renamed"})
    renamed = (await running.client.get("/api/v1/sync", params={"cursor": first["next_cursor"]})).json()
    assert [(c["entity"], c["op"], c["conversation"]["title"]) for c in renamed["changes"]] == [
        ("conversation", "upsert", "Renamed")]
    assert (await running.client.delete(f"/api/v1/conversations/{conversation_id}")).status_code == 204
    deleted = (await running.client.get("/api/v1/sync", params={"cursor": renamed["next_cursor"]})).json()
    assert [(c["entity"], c["id"], c["op"], c["conversation"]) for c in deleted["changes"]] == [
        ("conversation", conversation_id, "delete", None)]
    # From the beginning: the entities' last changes, with the deleted conversation's data gone.
    replay = (await running.client.get("/api/v1/sync")).json()["changes"]
    assert next(c for c in replay if c["entity"] == "conversation")["op"] == "delete"
    assert all(c["message"] is None for c in replay)


async def test_sync_pages_with_has_more(running: RunningApp) -> None:
    await _conversation(running, 2)
    cursor, seen, pages = None, [], 0
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await running.client.get("/api/v1/sync", params=params)).json()
        seen += [(change["entity"], change["id"]) for change in page["changes"]]
        cursor, pages = page["next_cursor"], pages + 1
        if not page["has_more"]:
            break
    assert pages >= 3
    assert len(set(seen)) == 5  # one conversation, four messages


async def test_sync_and_resumed_streams_count_against_requests_per_minute(tmp_path: Path) -> None:
    """A client polling the sync feed or re-opening an answer's stream in a loop is held to its requests
    per minute like any request (a typed 429 with Retry-After), though neither spends model capacity."""
    settings = await asyncio.to_thread(make_settings, tmp_path / "data",
                                       rate_limits={"key_requests_per_minute": 3})
    async with run_app(settings) as app:
        asked = (await app.client.post("/api/v1/chat/ask", json={"message": "Hi", "stream": False})).json()
        stream = f"/api/v1/conversations/{asked['conversation_id']}/messages/{asked['message_id']}/stream"
        assert (await app.client.get("/api/v1/sync")).status_code == 200
        assert (await app.client.get(stream)).status_code == 200
        refused = await app.client.get("/api/v1/sync")
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited", refused.text
        assert int(refused.headers["retry-after"]) >= 1
        assert (await app.client.get(stream)).status_code == 429
