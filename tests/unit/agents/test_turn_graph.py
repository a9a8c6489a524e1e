"""The chat path's one-step form of the assistant graph (``build_turn_graph``) runs the same nodes along the
same routes as the assistant graph: for every route, the same custom events (steps, tokens, discards), the
same model requests, and the same final state."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from atrium.accounts.principal import Principal
from atrium.agents.context import AssistantDeps, AssistantSettings
from atrium.agents.graph import build_assistant_graph, build_turn_graph
from atrium.agents.memory import InMemoryArtifactSink, InMemoryProjectRecords
from atrium.gateway.ports import ChatModel, ChatRequest
from atrium.gateway.providers.fake import FakeChatModel, grounded_answer
from atrium.telemetry.tracing import RecordingTracer
from tests.agent_helpers import MEMBER, ToolCallingModel, World, scripted, turn

REFUNDS = "How long do refunds take?"
CHECKLIST = json.dumps({"kind": "checklist", "title": "Refund checklist", "description": "Before refunding",
                        "content": "1. Check the original card\n2. Issue the refund within 14 days"})


def _refined(request: ChatRequest) -> str:
    if "previous answer" in request.messages[0].text:
        return grounded_answer(request)
    return "Refunds take 14 days. Penguins handle every refund in Antarctica."


# (message, the model, the principal, native tools): one per route of the graph
SCENARIOS: dict[str, tuple[str, Callable[[], ChatModel], Principal | None, bool]] = {
    "qa": (REFUNDS, FakeChatModel, MEMBER, False),
    "refined once": (REFUNDS, lambda: scripted(qa=_refined), MEMBER, False),
    "still unsupported": (REFUNDS, lambda: scripted(qa="Penguins handle every refund in Antarctica."), MEMBER,
                          False),
    "nothing relevant": ("Where do penguins nest?", lambda: scripted(classify='{"intent": "qa"}'), MEMBER, False),
    "artifact": ("Write a checklist for handling a refund", lambda: scripted(artifact=CHECKLIST), MEMBER, False),
    "model-classified": ("refund policy summary for the team wiki",
                         lambda: scripted(classify='{"intent": "artifact"}', artifact=CHECKLIST), MEMBER, False),
    "clarify": ("what about that?", lambda: scripted(chat="Which document do you mean? Refunds?"), MEMBER, False),
    "chitchat": ("Hello!", lambda: scripted(chat="Hi! Ask me about your documents."), MEMBER, False),
    "tools": ("How are invoices sent?",
              lambda: ToolCallingModel(("search_knowledge", json.dumps({"query": "invoices"}))), MEMBER, True),
    "model failure": (REFUNDS, lambda: FakeChatModel(fail_after_tokens=2, error_code="model_unavailable"), MEMBER,
                      False),
    "no principal": (REFUNDS, FakeChatModel, None, False),
}


QA, REFINED = ["answer", "validate"], ["answer", "validate", "answer", "validate"]
PATHS = {"qa": QA, "refined once": REFINED, "still unsupported": REFINED, "nothing relevant": QA,
         "artifact": ["artifact"], "model-classified": ["artifact"], "clarify": ["clarify"], "chitchat": ["chitchat"],
         "tools": ["answer", "tools", "answer", "validate"], "model failure": ["answer"]}
PATHS = {name: ["retrieve", "classify", *path, "finish"] for name, path in PATHS.items()} | {
    "no principal": ["retrieve", "finish"]}


def _deps(world: World, model: ChatModel, native_tools: bool, tracer: RecordingTracer) -> AssistantDeps:
    return AssistantDeps(answerer=world.answerer, model=model, artifacts=InMemoryArtifactSink(),
                         projects=InMemoryProjectRecords(), settings=AssistantSettings(native_tools=native_tools),
                         tracer=tracer)


def _seen(result: Any, model: Any, tracer: RecordingTracer) -> dict[str, Any]:
    state = dict(result.state)
    artifact = state.get("artifact")
    text = json.dumps({
        "state": state,
        "custom": [{key: value for key, value in event.items() if key != "ms"} for event in result.custom],
        "requests": [(request.context.task, [message.text for message in request.messages], request.tools)
                     for request in model.requests],
        "spans": [(span.name, span.status) for span in sorted(tracer.spans, key=lambda span: span.started)],
    }, sort_keys=True, default=str)
    if artifact:  # each run stores its own artifact: the same but for its id
        text = text.replace(artifact["id"], "<artifact>")
    seen: dict[str, Any] = json.loads(text)
    return seen


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_the_turn_graph_runs_the_assistant_graph_in_one_step(world: World, scenario: str) -> None:
    message, make_model, principal, native = SCENARIOS[scenario]
    runs = []
    for build in (lambda deps: build_assistant_graph(deps, None), build_turn_graph):
        model, tracer = make_model(), RecordingTracer()
        result = await turn(build(_deps(world, model, native, tracer)), message, principal=principal)
        runs.append((result, _seen(result, model, tracer)))
    (graph_run, by_graph), (turn_run, by_turn) = runs
    assert by_turn == by_graph
    assert len(turn_run.updates) == 1 < len(graph_run.updates)  # one super-step
    assert graph_run.steps == PATHS[scenario]
