"""Chat: grounded JSON and SSE answers, citations mapped to sources, multi-turn, storage guarantees."""

from __future__ import annotations

from collections.abc import AsyncIterator

from sqlalchemy import select

from atrium.gateway.ports import ChatEvent, ChatRequest
from atrium.gateway.providers.fake import FakeChatModel
from atrium.knowledge.answering import NO_ANSWER
from atrium.settings import Settings
from atrium.store.models import Message, UsageRecord
from tests.api.helpers import ingest, parse_sse
from tests.conftest import RunningApp, run_app


async def test_ask_returns_a_grounded_answer_with_mapped_citations(running: RunningApp) -> None:
    await ingest(running.client)
    response = await running.client.post("/api/v1/chat/ask", json={"message": "How long do refunds take?"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert "[1]" in body["answer"]
    assert "14 days" in body["answer"]
    first = body["sources"][0]
    assert first["number"] == 1 and first["cited"] is True and first["source"] == "billing.md"
    assert body["model"] == "fake"
    assert body["usage"]["completion_tokens"] > 0
    assert body["conversation_id"] and body["message_id"]


async def test_ask_says_it_does_not_know_without_relevant_context(running: RunningApp) -> None:
    response = await running.client.post("/api/v1/chat/ask", json={"message": "What is the capital of Peru?"})
    body = response.json()
    assert body["answer"] == NO_ANSWER
    assert body["sources"] == []
    assert body["model"] is None


async def test_stream_events_are_ordered_and_end_with_done(running: RunningApp) -> None:
    await ingest(running.client)
    response = await running.client.post("/api/v1/chat/ask", json={"message": "refunds?", "stream": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    names = [name for name, _ in events]
    assert names[0] == "meta" and names[-1] == "done"
    assert names[-2] == "sources"
    assert set(names[1:-2]) == {"token"}
    streamed = "".join(data["text"] for name, data in events if name == "token")
    assert streamed == events[-1][1]["answer"]
    accept = await running.client.post("/api/v1/chat/ask", json={"message": "refunds?"},
                                       headers={"Accept": "text/event-stream"})
    assert parse_sse(accept.text)[-1][0] == "done"


async def test_multi_turn_conversation_is_stored_and_listed(running: RunningApp) -> None:
    await ingest(running.client)
    first = (await running.client.post("/api/v1/chat/ask", json={"message": "How long do refunds take?"})).json()
    second = (await running.client.post("/api/v1/chat/ask", json={"message": "And when are invoices sent?",
                                                                   "conversation_id": first["conversation_id"]})).json()
    assert second["conversation_id"] == first["conversation_id"]
    messages = (await running.client.get(f"/api/v1/conversations/{first['conversation_id']}/messages")).json()
    roles = [(m["role"], m["status"]) for m in messages["messages"]]
    assert roles == [("user", "complete"), ("assistant", "complete")] * 2
    assert messages["messages"][3]["content"] == second["answer"]
    listed = (await running.client.get("/api/v1/conversations")).json()["conversations"]
    assert [c["id"] for c in listed] == [first["conversation_id"]]
    unknown = await running.client.post("/api/v1/chat/ask", json={"message": "hi", "conversation_id": "nope"})
    assert unknown.status_code == 404
    assert (await running.client.delete(f"/api/v1/conversations/{first['conversation_id']}")).status_code == 204
    assert (await running.client.get(f"/api/v1/conversations/{first['conversation_id']}")).status_code == 404


async def test_history_reaches_the_model_on_the_second_turn(running: RunningApp) -> None:
    await ingest(running.client)
    model = running.model
    assert isinstance(model, FakeChatModel)
    first = (await running.client.post("/api/v1/chat/ask", json={"message": "How long do refunds take?"})).json()
    await running.client.post("/api/v1/chat/ask", json={"message": "Who do I contact?",
                                                        "conversation_id": first["conversation_id"]})
    roles = [m.role for m in model.requests[-1].messages]
    assert roles == ["system", "user", "assistant", "user"]
    assert model.requests[-1].messages[1].content == "How long do refunds take?"


class _Recorder:
    """A ChatModel adapter that snapshots the stored messages at the moment it is called."""

    def __init__(self, running: RunningApp) -> None:
        self.running = running
        self.name = "recorder"
        self.seen: list[tuple[str, str, str]] = []
        self.inner = FakeChatModel(name="recorder")

    async def stream(self, request: ChatRequest) -> AsyncIterator[ChatEvent]:
        async with self.running.services.db.system_session() as session:
            rows = (await session.scalars(select(Message).order_by(Message.created_at))).all()
        self.seen = [(m.role, m.status, m.content) for m in rows]
        async for event in self.inner.stream(request):
            yield event

    async def ready(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


async def test_user_message_is_stored_before_the_model_is_called(running: RunningApp) -> None:
    await ingest(running.client)
    recorder = _Recorder(running)
    running.services.chat.model = recorder
    await running.client.post("/api/v1/chat/ask", json={"message": "How long do refunds take?"})
    assert recorder.seen == [("user", "complete", "How long do refunds take?"), ("assistant", "pending", "")]


async def test_model_failure_mid_stream_ends_with_error_and_keeps_partial_answer(settings: Settings) -> None:
    async with run_app(settings, FakeChatModel(fail_after_tokens=2, error_code="upstream_error")) as running:
        await _fails_mid_stream(running)


async def _fails_mid_stream(running: RunningApp) -> None:
    await ingest(running.client)
    response = await running.client.post("/api/v1/chat/ask", json={"message": "refunds?", "stream": True})
    events = parse_sse(response.text)
    assert events[-1][0] == "error"
    assert events[-1][1]["code"] == "upstream_error"
    assert "done" not in [name for name, _ in events]
    async with running.services.db.system_session() as session:
        stored = await session.get(Message, events[-1][1]["message_id"])
    assert stored is not None and stored.status == "error"
    assert stored.content == "".join(d["text"] for n, d in events if n == "token")
    assert stored.content
    # the cut answer is still metered by the gateway: one usage row counting the two streamed tokens
    await running.services.gateway.recorder.flush()
    async with running.services.db.system_session() as session:
        usage = (await session.scalars(select(UsageRecord).where(UsageRecord.outcome == "upstream_error"))).all()
    assert [row.completion_tokens for row in usage] == [2]
    as_json = await running.client.post("/api/v1/chat/ask", json={"message": "refunds?"})
    assert as_json.status_code == 502
    assert as_json.json()["error"]["code"] == "upstream_error"
