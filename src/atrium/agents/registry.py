"""The assistants the agents API serves: ``assistant_id`` or ``graph_id`` -> a factory that compiles the
graph with a checkpointer.

A graph factory is ``factory(deps, checkpointer) -> compiled graph``: ``deps`` (``AgentDeps``) are the
long-lived parts a graph's nodes call (the gateway's one ``ChatModel``...), given once when the registry
is built; the checkpointer is given per run (on PostgreSQL it carries the run's organisation). Who a run
acts for travels in LangGraph's run context (``AgentContext``, ``Runtime.context`` in a node), never in the
checkpointed state. Assistant ids are stable: a UUID derived from the graph id, as the LangGraph platform
makes for its default assistants, so ``assistant_id="echo"`` and the UUID name the same one.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.pregel import Pregel

from atrium.agents.context import AgentDeps
from atrium.errors import NotFound

# The namespace the LangGraph platform derives its default assistants' ids in (uuid5 of the graph id).
_ASSISTANT_NAMESPACE = uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")
_REGISTERED_AT = datetime(2026, 12, 1, tzinfo=UTC)


GraphFactory = Callable[[AgentDeps, BaseCheckpointSaver[Any]], Pregel[Any, Any, Any, Any]]


@dataclass(frozen=True, slots=True)
class Assistant:
    """One assistant: a graph and how to describe it (the ``Assistant`` of the platform API)."""

    graph_id: str
    factory: GraphFactory
    name: str = ""
    description: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def assistant_id(self) -> str:
        return str(uuid.uuid5(_ASSISTANT_NAMESPACE, self.graph_id))

    @property
    def created_at(self) -> datetime:
        return _REGISTERED_AT


class GraphRegistry:
    """Assistants by id and by graph id; ``compile`` builds an assistant's graph for one checkpointer."""

    def __init__(self, deps: AgentDeps, assistants: Iterable[Assistant] = ()) -> None:
        self.deps = deps
        self._by_key: dict[str, Assistant] = {}
        self._ordered: list[Assistant] = []
        for assistant in assistants:
            self.register(assistant)

    def register(self, assistant: Assistant) -> None:
        if assistant.graph_id in self._by_key:
            raise ValueError(f"graph {assistant.graph_id!r} is already registered")
        self._by_key[assistant.graph_id] = assistant
        self._by_key[assistant.assistant_id] = assistant
        self._ordered.append(assistant)

    def get(self, key: str) -> Assistant:
        """The assistant named by its id or its graph id; ``NotFound`` otherwise."""
        found = self._by_key.get(key)
        if found is None:
            raise NotFound("No such assistant.")
        return found

    def all(self) -> list[Assistant]:
        return list(self._ordered)

    def compile(self, assistant: Assistant, checkpointer: BaseCheckpointSaver[Any]) -> Pregel[Any, Any, Any, Any]:
        return assistant.factory(self.deps, checkpointer)


ASSISTANT_DEPS = "assistant"  # the key of ``AgentDeps.extra`` holding the assistant's ``AssistantDeps``


def _assistant_graph(deps: AgentDeps, checkpointer: BaseCheckpointSaver[Any]) -> Pregel[Any, Any, Any, Any]:
    from atrium.agents.graph import build_assistant_graph

    return build_assistant_graph(deps.extra[ASSISTANT_DEPS], checkpointer)


def default_registry(deps: AgentDeps) -> GraphRegistry:
    """The assistants Atrium ships: ``assistant`` (when ``deps.extra`` carries its ``AssistantDeps``, as
    the container's do), the ``project`` guided flow, ``echo`` and ``interviewer``. The ``onboarding``
    flow is served only through ``/api/v1/flows``: a password answered through ``/threads/.../runs`` would
    be kept in clear in the run and the checkpoint writes, which the flows service prevents by hashing it
    before the graph sees it."""
    from atrium.agents.flows.engine import compile_flow
    from atrium.agents.flows.project import project_flow
    from atrium.agents.graphs.echo import build_echo_graph, build_interviewer_graph

    assistant = ([Assistant("assistant", _assistant_graph, name="Assistant",
                            description="Grounded answers with citations, typed artifacts, one clarifying "
                                        "question, or small talk; tools run as the caller.")]
                 if ASSISTANT_DEPS in deps.extra else [])
    project = project_flow()
    return GraphRegistry(deps, [
        *assistant,
        Assistant("project", lambda deps, saver: compile_flow(project, deps, saver), name="Create a project",
                  description=project.description, metadata={"flow": "project"}),
        Assistant("echo", build_echo_graph, name="Echo",
                  description="Answers the last message through the model gateway, streaming its tokens."),
        Assistant("interviewer", build_interviewer_graph, name="Interviewer",
                  description="Asks for the caller's name (an interrupt), then answers through the gateway."),
    ])
