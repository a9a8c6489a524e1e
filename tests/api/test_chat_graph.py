"""``POST /api/v1/chat/ask`` through the assistant graph: each node a span and (on request) a ``step`` event,
in order; a draft that validation withdraws is cleared by a ``discard`` event and never stored; an artifact
request makes an artifact through the ``ArtifactSink`` port and names it in ``artifacts``; the turn's usage
is the sum of its model calls."""

from __future__ import annotations

import json
from dataclasses import replace

from atrium.agents.chat_turns import ChatAssistant
from atrium.agents.memory import InMemoryArtifactSink
from atrium.gateway.ports import ChatRequest
from atrium.gateway.providers.fake import FakeChatModel, grounded_answer
from atrium.settings import Settings
from atrium.store.models import Message
from atrium.telemetry.tracing import RecordingTracer
from tests.api.helpers import ingest, parse_sse
from tests.conftest import RunningApp, run_app

QA_NODES = ["retrieve", "classify", "answer", "validate", "finish"]


def traced(running: RunningApp, **deps: object) -> RecordingTracer:
    """The app's chat assistant again, with a recording tracer (and any other ``deps`` replaced)."""
    tracer = RecordingTracer()
    assistant = running.services.chat.assistant
    running.services.chat.assistant = ChatAssistant(replace(assistant.deps, tracer=tracer, **deps))
    return tracer


async def test_each_node_is_a_span_and_a_step_event_in_order(running: RunningApp) -> None:
    await ingest(running.client)
    tracer = traced(running)
    response = await running.client.post("/api/v1/chat/ask", json={"message": "How long do refunds take?",
                                                                   "stream": True, "steps": True})
    events = parse_sse(response.text)
    steps = [data for name, data in events if name == "step"]
    assert [step["node"] for step in steps] == QA_NODES
    assert all(step["status"] == "ok" and step["ms"] >= 0 for step in steps)
    assert tracer.named("assistant.") == [f"assistant.{node}" for node in QA_NODES]
    assert [span.attributes["atrium.node"] for span in tracer.spans] == QA_NODES
    assert all(span.status == "ok" and span.duration_ms >= 0 for span in tracer.spans)
    # the steps sit where their nodes ran: the answer's tokens between the answer's start and its step
    names = [name for name, _ in events]
    assert names[0] == "meta" and names[-2:] == ["sources", "done"]
    answer_step = names.index("step", names.index("token"))
    assert steps.index(events[answer_step][1]) == QA_NODES.index("answer")
    assert "".join(d["text"] for n, d in events if n == "token") == events[-1][1]["answer"]
    # JSON answers and streams without the flag carry no step events (the contract of the route)
    plain = parse_sse((await running.client.post("/api/v1/chat/ask", json={"message": "How long do refunds take?",
                                                                            "stream": True})).text)
    assert "step" not in [name for name, _ in plain]
    assert len(tracer.spans) == 2 * len(QA_NODES)


async def test_a_refused_step_is_an_error_span_and_the_turn_is_stored_failed(settings: Settings) -> None:
    async with run_app(settings, FakeChatModel(fail_after_tokens=2, error_code="upstream_error")) as running:
        await ingest(running.client)
        tracer = traced(running)
        events = parse_sse((await running.client.post(
            "/api/v1/chat/ask", json={"message": "How long do refunds take?", "stream": True, "steps": True})).text)
    steps = {data["node"]: data["status"] for name, data in events if name == "step"}
    assert steps == {"retrieve": "ok", "classify": "ok", "answer": "error", "finish": "ok"}
    answer = next(span for span in tracer.spans if span.name == "assistant.answer")
    assert answer.status == "error" and answer.attributes["atrium.error_code"] == "upstream_error"
    assert events[-1][0] == "error" and events[-1][1]["code"] == "upstream_error"


async def test_a_withdrawn_draft_is_discarded_and_the_refined_answer_stored(settings: Settings) -> None:
    drafts = iter(["Refunds are instant and unlimited for everyone.", None])

    def answer(request: ChatRequest) -> str:
        if request.context.task != "qa":
            return grounded_answer(request)
        draft = next(drafts, None)
        return draft or grounded_answer(request)

    async with run_app(settings, FakeChatModel(answer=answer)) as running:
        await ingest(running.client)
        events = parse_sse((await running.client.post(
            "/api/v1/chat/ask", json={"message": "How long do refunds take?", "stream": True})).text)
        names = [name for name, _ in events]
        assert names.count("discard") == 1 and names[-1] == "done"
        cut = names.index("discard")
        first = "".join(d["text"] for n, d in events[:cut] if n == "token")
        second = "".join(d["text"] for n, d in events[cut:] if n == "token")
        done = events[-1][1]
        assert first == "Refunds are instant and unlimited for everyone."
        assert second == done["answer"] and "14 days" in second and "[1]" in second
        async with running.services.db.system_session() as session:
            stored = await session.get(Message, done["message_id"])
        assert stored is not None and stored.content == second and stored.status == "complete"
        # both model calls of the turn are counted in its usage
        assert isinstance(running.model, FakeChatModel)
        qa_calls = [r for r in running.model.requests if r.context.task == "qa"]
        assert len(qa_calls) == 2
        assert done["usage"]["completion_tokens"] == len(first.split()) + len(second.split())


async def test_an_artifact_request_makes_an_artifact_named_in_the_answer(settings: Settings) -> None:
    reply = json.dumps({"kind": "checklist", "title": "Refund checklist", "description": "Before refunding",
                        "content": "1. Check the original card\n2. Issue the refund within 14 days"})

    def answer(request: ChatRequest) -> str:
        return reply if request.context.task == "artifact" else grounded_answer(request)

    async with run_app(settings, FakeChatModel(answer=answer)) as running:
        await ingest(running.client)
        sink = InMemoryArtifactSink()
        traced(running, artifacts=sink)
        body = (await running.client.post("/api/v1/chat/ask", json={
            "message": "Write a checklist for handling a refund"})).json()
        [stored] = sink.artifacts.values()
        assert stored.kind == "checklist" and stored.content.startswith("- [ ] Check the original card")
        assert body["artifacts"] == [{"id": stored.id, "kind": "checklist", "title": "Refund checklist",
                                      "description": "Before refunding"}]
        assert stored.id in body["answer"]
        messages = (await running.client.get(f"/api/v1/conversations/{body['conversation_id']}/messages")).json()
        assert messages["messages"][-1]["content"] == body["answer"]
        plain = (await running.client.post("/api/v1/chat/ask", json={"message": "How long do refunds take?"})).json()
        assert plain["artifacts"] == []
