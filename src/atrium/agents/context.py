"""What a graph is given: ``AgentDeps``, the long-lived parts its nodes call (built once by the container),
and ``AgentContext``, who a run acts for (LangGraph's run context, per run, never checkpointed)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from atrium.accounts.principal import Principal
    from atrium.gateway.ports import ChatModel


@dataclass(frozen=True, slots=True)
class AgentDeps:
    """What graphs may call: built once by the container. ``chat`` is the gateway's stack (guard, budget,
    metering, routing...), so a node's model call is metered and limited like any other."""

    chat: ChatModel
    extra: dict[str, Any] = field(default_factory=dict)  # further services a graph needs (by name)


@dataclass(frozen=True, slots=True)
class AgentContext:
    """Who a run acts for and where: LangGraph's run context (``context=`` of ``astream``), available to
    nodes as ``runtime.context``. Not checkpointed."""

    principal: Principal
    thread_id: str
    run_id: str
