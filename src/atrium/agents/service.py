"""The agents room as the container builds it once: the checkpointer, the graph registry, thread states and
runs, and the few use cases that span them: deleting a thread erases its runs, its checkpoints and what it
produced; retention prunes each thread's checkpoints after a run and sweeps away idle threads."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import delete, or_, select

from atrium.accounts.principal import Principal
from atrium.agents.checkpoints import Checkpoints, open_checkpoints
from atrium.agents.context import AgentDeps
from atrium.agents.flows import shipped_flows
from atrium.agents.flows.service import FlowService, FlowWaitingHook, no_notification
from atrium.agents.registry import GraphRegistry, default_registry
from atrium.agents.runs import AgentRuns
from atrium.agents.settings import AgentSettings
from atrium.agents.thread_states import ThreadStates
from atrium.agents.threads import delete_thread_row
from atrium.conversations.runs import RunSupervisor
from atrium.gateway.ports import ChatModel
from atrium.settings import Settings
from atrium.store.engine import Database
from atrium.store.models import AgentRun, AgentThread
from atrium.store.ports import PubSub

log = logging.getLogger(__name__)

# Erases what a thread produced outside its checkpoints (its artifacts): ``(org_id, thread_id)``.
ProductEraser = Callable[[str, str], Awaitable[object]]


@dataclass
class Agents:
    db: Database
    checkpoints: Checkpoints
    registry: GraphRegistry
    states: ThreadStates
    runs: AgentRuns
    settings: AgentSettings = field(default_factory=AgentSettings)
    erase_products: ProductEraser | None = None  # set by the container once the artifact store exists
    flows: FlowService | None = None  # guided flows (agents/flows/), when their services were given

    async def delete_thread(self, principal: Principal, thread_id: str) -> None:
        """Delete the caller's thread: its runs are stopped, its rows, checkpoints and products erased."""
        row = await delete_thread_row(self.db, principal, thread_id)
        await self._erase_after_row(row.org_id, row.id)

    async def erase_thread(self, org_id: str, thread_id: str) -> bool:
        """Erase a thread whoever owns it (the caller decided it must go: its conversation was deleted, it
        outlived the TTL). False when there was no such thread of ``org_id``."""
        async with self.db.tenant_session(org_id) as session:
            await session.execute(delete(AgentRun).where(AgentRun.org_id == org_id, AgentRun.thread_id == thread_id))
            gone = await session.execute(delete(AgentThread).where(AgentThread.org_id == org_id,
                                                                   AgentThread.id == thread_id))
        if not gone.rowcount:  # type: ignore[attr-defined]
            return False
        await self._erase_after_row(org_id, thread_id)
        return True

    async def erase_conversation_threads(self, org_id: str, conversation_id: str) -> int:
        """Erase the threads tied to a conversation being deleted: the thread whose id is the
        conversation's, and those whose metadata names it (``{"conversation_id": ...}``)."""
        async with self.db.tenant_session(org_id) as session:
            ids = list(await session.scalars(select(AgentThread.id).where(
                AgentThread.org_id == org_id,
                or_(AgentThread.id == conversation_id,
                    AgentThread.meta["conversation_id"].as_string() == conversation_id))))
        return sum([await self.erase_thread(org_id, thread_id) for thread_id in ids])

    async def _erase_after_row(self, org_id: str, thread_id: str) -> None:
        # The row is gone, so no run can start on the thread; the running ones stop before the erasure, so
        # that none writes a checkpoint after it.
        await self.runs.stop_thread(thread_id)
        await self.checkpoints.delete_thread(org_id, thread_id)
        if self.erase_products is not None:
            await self.erase_products(org_id, thread_id)

    async def sweep(self, now: datetime | None = None) -> int:
        """Erase the threads idle (not updated, not busy) for longer than ``thread_ttl``, at most
        ``sweep_batch`` of them; how many were erased."""
        if self.settings.thread_ttl is None:
            return 0
        cutoff = (now or datetime.now(UTC)) - self.settings.thread_ttl
        async with self.db.system_session() as session:
            expired = (await session.execute(
                select(AgentThread.org_id, AgentThread.id)
                .where(AgentThread.updated_at < cutoff, AgentThread.status != "busy")
                .order_by(AgentThread.updated_at).limit(self.settings.sweep_batch))).all()
        erased = 0
        for org_id, thread_id in expired:
            async with self.db.tenant_session(org_id) as session:  # still expired and idle (not run meanwhile)
                still = await session.scalar(select(AgentThread.id).where(
                    AgentThread.org_id == org_id, AgentThread.id == thread_id, AgentThread.updated_at < cutoff,
                    AgentThread.status != "busy"))
            if still is not None and await self.erase_thread(org_id, thread_id):
                erased += 1
        return erased

    async def keep_sweeping(self) -> None:
        """The TTL sweep every ``sweep_interval_s`` until cancelled (nothing to do without a TTL)."""
        if self.settings.thread_ttl is None:
            return
        while True:
            try:
                erased = await self.sweep()
                if erased:
                    log.info("retention: %d idle agent threads erased", erased)
            except Exception:
                log.exception("retention sweep failed; it runs again later")
            await asyncio.sleep(self.settings.sweep_interval_s)

    def stopping(self) -> None:
        """Shutdown began: runs cancelled from now on were interrupted by it, not by a caller."""
        self.runs.shutting_down = True

    async def aclose(self) -> None:
        await self.checkpoints.aclose()


async def build_agents(settings: Settings, db: Database, chat: ChatModel, supervisor: RunSupervisor,
                       pubsub: PubSub | None = None, registry: GraphRegistry | None = None,
                       deps: AgentDeps | None = None, *,
                       on_flow_waiting: FlowWaitingHook = no_notification) -> Agents:
    """The agents room; ``registry`` overrides the assistants Atrium ships (tests, embedding apps).
    ``deps.extra``: services graphs call by name (the assistant's ``AssistantDeps``, ``accounts``,
    ``projects``); with ``accounts`` the guided flows are served (``on_flow_waiting``: called when a flow
    waits for its starter's answer)."""
    checkpoints = await open_checkpoints(settings)
    deps = deps or AgentDeps(chat=chat)
    registry = registry or default_registry(deps)
    runs = AgentRuns(db, checkpoints, registry, supervisor, pubsub, graph_runs=deps.graph_runs)
    runs.keep_checkpoints = settings.agents.checkpoints_keep_last
    flows = None
    if "accounts" in deps.extra:
        flows = FlowService(db, checkpoints, deps, shipped_flows(), deps.extra["accounts"].passwords,
                            on_waiting=on_flow_waiting)
    return Agents(db=db, checkpoints=checkpoints, registry=registry, states=ThreadStates(db, checkpoints, registry),
                  runs=runs, settings=settings.agents, flows=flows)
