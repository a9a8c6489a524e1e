"""What a graph is given: ``AgentDeps``, the long-lived parts its nodes call (built once by the container),
and ``AgentContext``, who a run acts for (LangGraph's run context, per run, never checkpointed); the
assistant graph's own ``AssistantDeps`` (``agents/graph.py``, ``agents/nodes.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from atrium.telemetry.graph_runs import NO_GRAPH_TRACING, GraphRunTracing
from atrium.telemetry.tracing import NOOP_TRACER, Tracer

if TYPE_CHECKING:
    from atrium.accounts.principal import Principal
    from atrium.agents.ports import ArtifactSink, ProjectRecords
    from atrium.gateway.ports import ChatModel
    from atrium.guard.pipeline import GuardPipeline
    from atrium.knowledge.answering import GroundedAnswerer


@dataclass(frozen=True, slots=True)
class AgentDeps:
    """What graphs may call: built once by the container. ``chat`` is the gateway's stack (guard, budget,
    metering, routing...), so a node's model call is metered and limited like any other. ``graph_runs``:
    where each run is traced (a span, LangSmith when on: ``telemetry/graph_runs.py``)."""

    chat: ChatModel
    extra: dict[str, Any] = field(default_factory=dict)  # further services a graph needs (by name)
    graph_runs: GraphRunTracing = NO_GRAPH_TRACING


@dataclass(frozen=True, slots=True)
class AgentContext:
    """Who a run acts for and where: LangGraph's run context (``context=`` of ``astream``), available to
    nodes as ``runtime.context``. Not checkpointed."""

    principal: Principal
    thread_id: str
    run_id: str


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
    graph_runs: GraphRunTracing = NO_GRAPH_TRACING  # each turn is the span ``graph.assistant``, LangSmith's run
