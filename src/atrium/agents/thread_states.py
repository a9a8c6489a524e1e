"""A thread's state and history, read from (and written to) the checkpointer on behalf of a principal.

The state of a thread is its graph's: which graph is the thread's is in its metadata (``graph_id``, set by
its first run or at creation), and a thread that never ran has an empty state. ``ThreadState`` dicts are
the platform API's (``values``, ``next``, ``tasks``, ``interrupts``, ``checkpoint``, ``metadata``,
``created_at``, ``parent_checkpoint``).
"""

from __future__ import annotations

from typing import Any

from langgraph.types import StateSnapshot

from atrium.accounts.ownership import principal_session
from atrium.accounts.principal import Principal
from atrium.agents.checkpoints import Checkpoints
from atrium.agents.registry import Assistant, GraphRegistry
from atrium.agents.streaming import jsonable
from atrium.agents.threads import readable_thread, writable_thread
from atrium.errors import Conflict, InvalidRequest, NotFound
from atrium.store.engine import Database
from atrium.store.models import AgentThread


def checkpoint_ref(thread_id: str, config: dict[str, Any] | None) -> dict[str, Any] | None:
    if not config:
        return None
    configurable = config.get("configurable", {})
    return {"thread_id": thread_id, "checkpoint_ns": configurable.get("checkpoint_ns", ""),
            "checkpoint_id": configurable.get("checkpoint_id"), "checkpoint_map": None}


def snapshot_view(thread_id: str, snapshot: StateSnapshot) -> dict[str, Any]:
    """A LangGraph ``StateSnapshot`` as the platform's ``ThreadState``."""
    checkpoint = checkpoint_ref(thread_id, dict(snapshot.config)) or checkpoint_ref(thread_id, {"configurable": {}})
    parent = checkpoint_ref(thread_id, dict(snapshot.parent_config) if snapshot.parent_config else None)
    tasks = [{"id": task.id, "name": task.name, "path": jsonable(task.path),
              "error": repr(task.error) if task.error is not None else None,
              "interrupts": jsonable(task.interrupts), "checkpoint": None, "state": None,
              "result": jsonable(task.result)} for task in snapshot.tasks]
    return {"values": jsonable(snapshot.values), "next": list(snapshot.next), "tasks": tasks,
            "interrupts": jsonable(snapshot.interrupts), "metadata": jsonable(snapshot.metadata or {}),
            "created_at": snapshot.created_at, "checkpoint": checkpoint, "parent_checkpoint": parent,
            "checkpoint_id": checkpoint["checkpoint_id"] if checkpoint else None,
            "parent_checkpoint_id": parent["checkpoint_id"] if parent else None}


def empty_state(thread_id: str) -> dict[str, Any]:
    return {"values": {}, "next": [], "tasks": [], "interrupts": [], "metadata": {}, "created_at": None,
            "checkpoint": {"thread_id": thread_id, "checkpoint_ns": "", "checkpoint_id": None,
                           "checkpoint_map": None},
            "parent_checkpoint": None, "checkpoint_id": None, "parent_checkpoint_id": None}


def interrupts_by_task(snapshot: StateSnapshot) -> dict[str, Any]:
    """The interrupts waiting for an answer, per task (the ``interrupts`` of a platform ``Thread``)."""
    return {task.id: jsonable(task.interrupts) for task in snapshot.tasks if task.interrupts}


class ThreadStates:
    """State, history and state updates of the threads a principal may read (write: its own)."""

    def __init__(self, db: Database, checkpoints: Checkpoints, registry: GraphRegistry) -> None:
        self.db = db
        self.checkpoints = checkpoints
        self.registry = registry

    def assistant_of(self, thread: AgentThread) -> Assistant | None:
        graph_id = thread.meta.get("graph_id")
        if not isinstance(graph_id, str):
            return None
        try:
            return self.registry.get(graph_id)
        except NotFound:
            return None

    async def get(self, principal: Principal, thread_id: str, *, checkpoint_id: str | None = None,
                  subgraphs: bool = False) -> dict[str, Any]:
        async with principal_session(self.db, principal) as session:
            thread = await readable_thread(session, principal, thread_id)
        assistant = self.assistant_of(thread)
        if assistant is None:
            if checkpoint_id is not None:
                raise NotFound("No such checkpoint.")
            return empty_state(thread_id)
        configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
        if checkpoint_id is not None:
            configurable["checkpoint_id"] = checkpoint_id
        async with self.checkpoints.for_tenant(principal.org_id) as saver:
            graph = self.registry.compile(assistant, saver)
            snapshot = await graph.aget_state({"configurable": configurable}, subgraphs=subgraphs)
        if checkpoint_id is not None and not snapshot.created_at:
            raise NotFound("No such checkpoint.")
        return snapshot_view(thread_id, snapshot) if snapshot.created_at else empty_state(thread_id)

    async def history(self, principal: Principal, thread_id: str, *, limit: int = 10, before: str | None = None,
                      metadata: dict[str, Any] | None = None,
                      checkpoint_id: str | None = None) -> list[dict[str, Any]]:
        """The thread's checkpoints, newest first."""
        async with principal_session(self.db, principal) as session:
            thread = await readable_thread(session, principal, thread_id)
        assistant = self.assistant_of(thread)
        if assistant is None:
            return []
        configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
        if checkpoint_id is not None:
            configurable["checkpoint_id"] = checkpoint_id
        before_config = {"configurable": {"checkpoint_id": before}} if before else None
        async with self.checkpoints.for_tenant(principal.org_id) as saver:
            graph = self.registry.compile(assistant, saver)
            return [snapshot_view(thread_id, snapshot) async for snapshot in graph.aget_state_history(
                {"configurable": configurable}, filter=metadata or None, before=before_config,  # type: ignore[arg-type]
                limit=limit)]

    async def update(self, principal: Principal, thread_id: str, *, values: Any, as_node: str | None,
                     checkpoint_id: str | None) -> dict[str, Any]:
        """Write ``values`` into the thread's state as if node ``as_node`` had (a new checkpoint)."""
        async with principal_session(self.db, principal) as session:
            thread = await writable_thread(session, principal, thread_id)
            if thread.status == "busy":
                raise Conflict("The thread has a run in progress.")
        assistant = self.assistant_of(thread)
        if assistant is None:
            raise InvalidRequest("The thread has no graph yet: run it (or create it with a graph_id) first.")
        configurable: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": ""}
        if checkpoint_id is not None:
            configurable["checkpoint_id"] = checkpoint_id
        async with self.checkpoints.for_tenant(principal.org_id) as saver:
            graph = self.registry.compile(assistant, saver)
            try:
                config = await graph.aupdate_state({"configurable": configurable}, values, as_node=as_node)
            except (ValueError, KeyError) as error:  # LangGraph's answer to an unknown node or bad update
                raise InvalidRequest(f"The state update was refused: {error}") from error
            snapshot = await graph.aget_state({"configurable": {"thread_id": thread_id}})
        async with principal_session(self.db, principal) as session:
            row = await writable_thread(session, principal, thread_id)
            row.values = jsonable(snapshot.values)
            row.interrupts = interrupts_by_task(snapshot)
        return {"checkpoint": checkpoint_ref(thread_id, dict(config))}
