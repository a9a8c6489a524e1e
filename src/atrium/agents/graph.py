"""The assistant graph (LangGraph): retrieve -> classify -> answer | artifact | clarify | chitchat ->
validate -> finish.

```
retrieve ─> classify ─┬─> answer <─> tools        (qa: tool calls, native or planned, loop back)
                      │     └──> validate ─┬─> finish        (every claim backed by a source)
                      │            ^       └─> answer        (refine once; then "I don't know")
                      ├─> artifact ───────────> finish       (typed, parsed strictly, refined once)
                      ├─> clarify ────────────> finish       (one question)
                      └─> chitchat ───────────> finish
```

Run it with the caller in the config, and stream ``custom`` for steps and tokens::

    graph = build_assistant_graph(deps, checkpointer)
    config = {"configurable": {"thread_id": thread, "principal": principal}}
    async for mode, chunk in graph.astream({"messages": [{"role": "user", "content": question}]}, config,
                                           stream_mode=["custom", "values", "updates"]):
        ...

A step that is refused (a guard, a budget, a collection the caller may not read) ends the turn at
``finish`` with ``error`` set in the state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command

from atrium.agents.nodes import AssistantNodes
from atrium.agents.ports import ArtifactSink, ProjectRecords
from atrium.agents.state import AssistantState
from atrium.gateway.ports import ChatModel
from atrium.guard.pipeline import GuardPipeline
from atrium.knowledge.answering import GroundedAnswerer
from atrium.telemetry.tracing import NOOP_TRACER, Tracer

ASSISTANT_ID = "assistant"


@dataclass(frozen=True, slots=True)
class AssistantSettings:
    """``native_tools``: the model takes OpenAI-format tools (else a JSON planning call stands in);
    ``max_tool_rounds``: tool calls per turn before the model must answer; ``history_messages``: earlier
    messages sent with a prompt."""

    max_tokens: int = 384
    temperature: float = 0.1
    artifact_max_tokens: int = 1024
    native_tools: bool = False
    max_tool_rounds: int = 2
    history_messages: int = 6


@dataclass(frozen=True, slots=True)
class AssistantDeps:
    """What the graph works with, injected once. ``answerer`` brings retrieval (its knowledge service,
    ``top_k`` and relevance bar); ``model`` is the gateway's chat stack (``Gateway.chat``), the one path
    to a model; ``guard`` the pipeline the use cases apply (None: no guard stages); ``tracer`` traces each node
    (an OpenTelemetry tracer fits the port)."""

    answerer: GroundedAnswerer
    model: ChatModel
    artifacts: ArtifactSink
    projects: ProjectRecords
    guard: GuardPipeline | None = None
    settings: AssistantSettings = field(default_factory=AssistantSettings)
    tracer: Tracer = NOOP_TRACER  # each node is the span ``assistant.<node>`` (telemetry/tracing.py)


def build_assistant_graph(deps: AssistantDeps,
                          checkpointer: BaseCheckpointSaver[Any] | None) -> CompiledStateGraph[Any]:
    """The compiled assistant graph over ``deps``, its threads kept by ``checkpointer``.

    A node that branches routes itself: it returns ``Command(update, goto)``, its route read off the state
    with its update applied (``_routed``). The same routes as conditional edges cost a traced runnable
    (callback runs, tasks) per super-step; the graph, its updates and its checkpoints are the same."""
    nodes = AssistantNodes(deps)
    graph: StateGraph[Any] = StateGraph(AssistantState)
    graph.add_node("retrieve", _routed(nodes.retrieve, _unless_failed("classify")), destinations=("classify", "finish"))
    graph.add_node("classify", _routed(nodes.classify, _by_intent),
                   destinations=("answer", "artifact", "clarify", "chitchat", "finish"))
    graph.add_node("answer", _routed(nodes.answer, _after_answer), destinations=("tools", "validate", "finish"))
    graph.add_node("tools", _routed(nodes.tools, _unless_failed("answer")), destinations=("answer", "finish"))
    graph.add_node("validate", _routed(nodes.validate, _after_validate), destinations=("answer", "finish"))
    graph.add_node("artifact", nodes.artifact)
    graph.add_node("clarify", nodes.clarify)
    graph.add_node("chitchat", nodes.chitchat)
    graph.add_node("finish", nodes.finish)
    graph.add_edge(START, "retrieve")
    for node in ("artifact", "clarify", "chitchat"):
        graph.add_edge(node, "finish")
    graph.add_edge("finish", END)
    return graph.compile(checkpointer=checkpointer, name=ASSISTANT_ID)


Route = Callable[[Mapping[str, Any]], str]


def _routed(node: Callable[[AssistantState, RunnableConfig], Awaitable[dict[str, Any]]], route: Route,
            ) -> Callable[..., Awaitable[Command[str]]]:
    """``node`` followed by its ``route``, which reads the state as the node's update leaves it (the routed
    channels are plain values: no reducer to apply)."""
    async def run(state: AssistantState, config: RunnableConfig) -> Command[str]:
        update = await node(state, config)
        return Command(update=update, goto=route({**state, **update}))
    run.__name__ = getattr(node, "__name__", "node")
    return run


def _unless_failed(target: str) -> Route:
    def route(state: Mapping[str, Any]) -> str:
        return "finish" if state.get("error") else target
    return route


def _by_intent(state: Mapping[str, Any]) -> str:
    if state.get("error"):
        return "finish"
    return {"qa": "answer", "artifact": "artifact", "clarify": "clarify", "chitchat": "chitchat"}.get(
        state.get("intent", "qa"), "answer")


def _after_answer(state: Mapping[str, Any]) -> str:
    if state.get("error"):
        return "finish"
    return "tools" if state.get("tool_calls") else "validate"


def _after_validate(state: Mapping[str, Any]) -> str:
    if state.get("error") or state.get("answer"):
        return "finish"
    return "answer"  # refused once: refine
