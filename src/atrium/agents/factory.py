"""Wiring the assistant into a running Atrium: its collaborators from the parts the container builds (the
chat use case's retrieval and guard pipeline, the gateway's stack). Its checkpointer is the app's
(``agents.checkpoints``); the container registers it as the ``assistant`` graph of the agents API
(``registry.default_registry``) and gives the same deps to ``/api/v1/chat/ask``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from atrium.agents.context import AssistantDeps, AssistantSettings
from atrium.agents.ports import ArtifactSink, ProjectRecords
from atrium.gateway.catalogue import Catalogue
from atrium.telemetry.graph_runs import NO_GRAPH_TRACING, GraphRunTracing

if TYPE_CHECKING:
    from atrium.conversations.chat import ChatService
    from atrium.gateway.service import Gateway
    from atrium.settings import Settings


def build_assistant_deps(settings: Settings, chat: ChatService, gateway: Gateway, artifacts: ArtifactSink,
                         projects: ProjectRecords, graph_runs: GraphRunTracing = NO_GRAPH_TRACING) -> AssistantDeps:
    """The assistant's deps over the same retrieval, guard pipeline and gateway stack as ``/api/v1/chat/ask``;
    its nodes and runs traced by ``graph_runs``."""
    return AssistantDeps(
        answerer=chat.answerer, model=gateway.chat, artifacts=artifacts, projects=projects, guard=chat.guard,
        settings=AssistantSettings(max_tokens=settings.chat.max_tokens, temperature=settings.chat.temperature,
                                   native_tools=calls_tools(gateway.catalogue)),
        tracer=graph_runs.tracer, graph_runs=graph_runs)


def calls_tools(catalogue: Catalogue, model: str = "") -> bool:
    """Whether the model a request names (default: the default model) declares tool calling. Models that
    declare nothing, the bundled local one and the fake among them, get the JSON stand-in."""
    entry = catalogue.entry(model or catalogue.default)
    return entry is not None and "tools" in entry.capabilities
