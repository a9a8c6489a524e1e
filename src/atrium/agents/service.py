"""The agents room as the container builds it once: the checkpointer, the graph registry, thread states and
runs, and the few use cases that span them (deleting a thread erases its runs and checkpoints)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from atrium.accounts.principal import Principal
from atrium.agents.checkpoints import Checkpoints, open_checkpoints
from atrium.agents.flows import shipped_flows
from atrium.agents.flows.service import FlowService, FlowWaitingHook, no_notification
from atrium.agents.registry import AgentDeps, GraphRegistry, default_registry
from atrium.agents.runs import AgentRuns
from atrium.agents.thread_states import ThreadStates
from atrium.agents.threads import delete_thread_row
from atrium.conversations.runs import RunSupervisor
from atrium.gateway.ports import ChatModel
from atrium.settings import Settings
from atrium.store.engine import Database
from atrium.store.ports import PubSub


@dataclass
class Agents:
    db: Database
    checkpoints: Checkpoints
    registry: GraphRegistry
    states: ThreadStates
    runs: AgentRuns
    flows: FlowService | None = None  # guided flows (agents/flows/), when their services were given

    async def delete_thread(self, principal: Principal, thread_id: str) -> None:
        """Delete the caller's thread: its runs are stopped, its rows and its checkpoints erased."""
        row = await delete_thread_row(self.db, principal, thread_id)
        await self.runs.stop_thread(row.id)  # before the erasure, so that no run writes a checkpoint after it
        await self.checkpoints.delete_thread(principal.org_id, row.id)

    def stopping(self) -> None:
        """Shutdown began: runs cancelled from now on were interrupted by it, not by a caller."""
        self.runs.shutting_down = True

    async def aclose(self) -> None:
        await self.checkpoints.aclose()


async def build_agents(settings: Settings, db: Database, chat: ChatModel, supervisor: RunSupervisor,
                       pubsub: PubSub | None = None, registry: GraphRegistry | None = None, *,
                       extra: dict[str, Any] | None = None,
                       on_flow_waiting: FlowWaitingHook = no_notification) -> Agents:
    """The agents room; ``registry`` overrides the assistants Atrium ships (tests, embedding apps).
    ``extra``: services graphs call by name (``accounts``, ``projects``); with ``accounts`` the guided
    flows are served (``on_flow_waiting``: called when a flow waits for its starter's answer)."""
    checkpoints = await open_checkpoints(settings)
    deps = AgentDeps(chat=chat, extra=dict(extra or {}))
    registry = registry or default_registry(deps)
    flows = None
    if "accounts" in deps.extra:
        flows = FlowService(db, checkpoints, deps, shipped_flows(), deps.extra["accounts"].passwords,
                            on_waiting=on_flow_waiting)
    return Agents(db=db, checkpoints=checkpoints, registry=registry,
                  states=ThreadStates(db, checkpoints, registry),
                  runs=AgentRuns(db, checkpoints, registry, supervisor, pubsub), flows=flows)
