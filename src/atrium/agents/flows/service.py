"""Running guided flows for a caller: start, read, answer, cancel (what REST and the WebSocket call).

A flow is an agents thread (``agent_threads``: its id is the flow id; private to its starter, so anyone
else, admins included, gets ``404``; metadata ``flow``, ``flow_status``, ``flow_result``/``flow_error``)
whose state lives in the app's checkpointer, so a flow survives a restart: a new process compiles the same
definition over the same checkpoints and resumes it. One answer at a time: the thread is claimed ``busy``
by one conditional update (a second answer meanwhile is ``409``).

Answers to a ``password`` step are checked against the password policy and hashed here, before the graph
is resumed; the graph, its state and its checkpoints only ever see ``{"password_hash": ...}``.

``on_waiting`` (a ``FlowWaitingHook``, default: nothing) is called each time a flow stops to wait for its
starter's answer: where notifications ("your flow waits for input") connect.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.types import Command, StateSnapshot
from sqlalchemy import or_, update

from atrium.accounts.admin_base import aware
from atrium.accounts.ownership import is_owner, principal_session
from atrium.accounts.passwords import Passwords, password_problem
from atrium.accounts.principal import Principal
from atrium.agents.checkpoints import Checkpoints
from atrium.agents.context import AgentContext, AgentDeps
from atrium.agents.flows.definition import FlowDefinition
from atrium.agents.flows.engine import PASSWORD_HASH, PASSWORD_REJECTED, compile_flow
from atrium.agents.streaming import jsonable
from atrium.agents.thread_states import interrupts_by_task
from atrium.agents.threads import create_thread, readable_thread
from atrium.errors import AppError, Conflict, Forbidden, NotFound
from atrium.store.engine import Database
from atrium.store.models import AgentThread

STALE_CLAIM = timedelta(minutes=5)  # a flow left busy this long (its process died) may be answered again
ENDED = ("done", "declined", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class FlowWaiting:
    """A flow stopped to wait for its starter's answer (what a notification would say)."""

    org_id: str
    user_id: str | None
    api_key_id: str | None
    flow_id: str
    flow: str
    prompt: dict[str, Any]


FlowWaitingHook = Callable[[FlowWaiting], Awaitable[None]]


async def no_notification(event: FlowWaiting) -> None:
    """The default ``FlowWaitingHook``: nothing is sent."""


@dataclass(frozen=True, slots=True)
class FlowView:
    """A flow as the API shows it: ``status`` ``waiting`` (``prompt`` says for what), ``done``
    (``result``), ``declined``, ``failed`` (``error``) or ``cancelled``."""

    id: str
    flow: str
    status: str
    prompt: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    values: dict[str, Any] = field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None


def _prompt_of(snapshot: StateSnapshot) -> dict[str, Any] | None:
    for pending in snapshot.interrupts:
        if isinstance(pending.value, dict):
            return dict(pending.value)
    return None


class FlowService:
    """The flows use cases (module doc)."""

    def __init__(self, db: Database, checkpoints: Checkpoints, deps: AgentDeps,
                 definitions: Mapping[str, FlowDefinition], passwords: Passwords, *,
                 on_waiting: FlowWaitingHook = no_notification) -> None:
        self.db = db
        self.checkpoints = checkpoints
        self.deps = deps
        self.definitions = dict(definitions)
        self.passwords = passwords
        self.on_waiting = on_waiting

    def definition(self, name: str) -> FlowDefinition:
        found = self.definitions.get(name)
        if found is None:
            raise NotFound("No such flow.")
        return found

    # -- use cases ------------------------------------------------------------------------------------

    async def start(self, principal: Principal, name: str) -> FlowView:
        definition = self.definition(name)
        if not principal.has_role(definition.min_role):
            raise Forbidden(f"The {name} flow needs the {definition.min_role} role.")
        row = await create_thread(self.db, principal, thread_id=None, visibility="private", metadata={
            "graph_id": name, "flow": name, "flow_status": "waiting"})
        await self._set_busy(principal, row.id)
        try:
            snapshot = await self._advance(principal, row.id, definition, {"values": {}}, first=True)
        except AppError as failure:  # e.g. the model failing a first step's suggestions: nothing to resume
            await self._store(principal, row.id, status="error", meta={
                "flow_status": "failed", "flow_error": {"code": failure.code, "message": failure.message}})
            raise
        return await self._settle(principal, row.id, definition, snapshot)

    async def get(self, principal: Principal, flow_id: str) -> FlowView:
        row, definition = await self._own(principal, flow_id)
        if row.meta.get("flow_status") != "waiting":
            return self._ended_view(row)
        async with self.checkpoints.for_tenant(principal.org_id) as saver:
            snapshot = await compile_flow(definition, self.deps, saver).aget_state(self._config(flow_id))
        return self._view(row, definition, snapshot)

    async def answer(self, principal: Principal, flow_id: str, answer: Any) -> FlowView:
        _, definition = await self._own(principal, flow_id, waiting=True)
        await self._claim(principal, flow_id)
        snapshot = await self._advance(principal, flow_id, definition, answer, first=False)
        return await self._settle(principal, flow_id, definition, snapshot)

    async def cancel(self, principal: Principal, flow_id: str) -> FlowView:
        """End a waiting flow: its checkpoints (what was answered so far) are erased."""
        row, _ = await self._own(principal, flow_id)
        if row.meta.get("flow_status") == "cancelled":
            return self._ended_view(row)
        if row.meta.get("flow_status") != "waiting":
            raise Conflict(f"The flow has ended ({row.meta.get('flow_status')}).")
        await self._claim(principal, flow_id)
        await self.checkpoints.delete_thread(principal.org_id, flow_id)
        return await self._store(principal, flow_id, status="idle", meta={"flow_status": "cancelled"},
                                 values={}, interrupts={})

    # -- running ---------------------------------------------------------------------------------------

    @staticmethod
    def _config(flow_id: str) -> RunnableConfig:
        return {"configurable": {"thread_id": flow_id, "checkpoint_ns": ""}}

    async def _advance(self, principal: Principal, flow_id: str, definition: FlowDefinition, answer: Any, *,
                       first: bool) -> StateSnapshot:
        """Run the graph to its next prompt or its end: from the start, or resumed with ``answer``."""
        config = self._config(flow_id)
        context = AgentContext(principal=principal, thread_id=flow_id, run_id=f"flow-{uuid.uuid4().hex[:12]}")
        try:
            async with self.checkpoints.for_tenant(principal.org_id) as saver:
                graph = compile_flow(definition, self.deps, saver)
                payload: Any = answer
                if not first:
                    prompt = _prompt_of(await graph.aget_state(config))
                    if prompt is None:
                        raise Conflict("The flow waits for no answer.")
                    payload = Command(resume=await self._sealed(prompt, answer))
                with self.deps.graph_runs.run(f"flow.{definition.name}", {"atrium.flow_id": flow_id}):
                    await graph.ainvoke(payload, config, context=context)
                return await graph.aget_state(config)
        except BaseException:
            await self._store(principal, flow_id, status="interrupted", meta={})  # released, unchanged
            raise

    async def _sealed(self, prompt: Mapping[str, Any], answer: Any) -> Any:
        """The resume value: the answer itself, or for a password its hash (or why it is refused)."""
        if prompt.get("kind") != "password":
            return answer
        if not isinstance(answer, str):
            return {PASSWORD_REJECTED: "The password is text."}
        problem = password_problem(answer)
        if problem is not None:
            return {PASSWORD_REJECTED: problem}
        return {PASSWORD_HASH: await self.passwords.hash(answer)}

    async def _settle(self, principal: Principal, flow_id: str, definition: FlowDefinition,
                      snapshot: StateSnapshot) -> FlowView:
        """Record where the flow stands after a run; erase its checkpoints if it ended and asks so."""
        prompt = _prompt_of(snapshot)
        values = dict(snapshot.values or {})
        shown = self._shown_values(definition, values)
        if prompt is not None:
            view = await self._store(principal, flow_id, status="interrupted", meta={"flow_status": "waiting"},
                                     values=shown, interrupts=interrupts_by_task(snapshot), prompt=prompt)
            await self.on_waiting(FlowWaiting(org_id=principal.org_id, user_id=principal.user_id,
                                              api_key_id=principal.api_key_id, flow_id=flow_id,
                                              flow=definition.name, prompt=prompt))
            return view
        outcome = str(values.get("outcome") or "done")
        meta: dict[str, Any] = {"flow_status": outcome}
        if values.get("result") is not None:
            meta["flow_result"] = jsonable(values["result"])
        if values.get("error"):
            meta["flow_error"] = jsonable(values["error"])
        if definition.erase_on_finish:
            await self.checkpoints.delete_thread(principal.org_id, flow_id)
        return await self._store(principal, flow_id, status="idle", meta=meta, values=shown, interrupts={})

    @staticmethod
    def _shown_values(definition: FlowDefinition, values: Mapping[str, Any]) -> dict[str, Any]:
        answers = dict(values.get("values") or {})
        return jsonable({key: value for key, value in answers.items() if key not in definition.secret_steps})

    # -- the thread row --------------------------------------------------------------------------------

    async def _own(self, principal: Principal, flow_id: str, *,
                   waiting: bool = False) -> tuple[AgentThread, FlowDefinition]:
        async with principal_session(self.db, principal) as session:
            row = await readable_thread(session, principal, flow_id)
        name = row.meta.get("flow")
        if not is_owner(row, principal) or not isinstance(name, str) or name not in self.definitions:
            raise NotFound("No such flow.")
        if waiting and row.meta.get("flow_status") != "waiting":
            raise Conflict(f"The flow has ended ({row.meta.get('flow_status')}).")
        return row, self.definitions[name]

    async def _claim(self, principal: Principal, flow_id: str) -> None:
        """Mark the flow busy, unless it is (one conditional update: two answers at once cannot both win)."""
        now = datetime.now(UTC)
        async with principal_session(self.db, principal) as session:
            claimed = await session.execute(
                update(AgentThread).where(
                    AgentThread.org_id == principal.org_id, AgentThread.id == flow_id,
                    or_(AgentThread.status != "busy", AgentThread.updated_at < now - STALE_CLAIM))
                .values(status="busy", updated_at=now))
        if getattr(claimed, "rowcount", 0) != 1:
            raise Conflict("The flow is busy with another answer; try again in a moment.")

    async def _set_busy(self, principal: Principal, flow_id: str) -> None:
        await self._claim(principal, flow_id)

    async def _store(self, principal: Principal, flow_id: str, *, status: str, meta: dict[str, Any],
                     values: dict[str, Any] | None = None, interrupts: dict[str, Any] | None = None,
                     prompt: dict[str, Any] | None = None) -> FlowView:
        async with principal_session(self.db, principal) as session:
            row = await readable_thread(session, principal, flow_id)
            row.status = status
            row.meta = {**row.meta, **meta}
            if values is not None:
                row.values = values
            if interrupts is not None:
                row.interrupts = interrupts
            row.updated_at = datetime.now(UTC)
            await session.flush()
            view = self._ended_view(row) if row.meta.get("flow_status") in ENDED else FlowView(
                id=row.id, flow=str(row.meta.get("flow")), status="waiting", prompt=prompt,
                values=dict(row.values or {}), created_at=aware(row.created_at), updated_at=aware(row.updated_at))
        return view

    def _view(self, row: AgentThread, definition: FlowDefinition, snapshot: StateSnapshot) -> FlowView:
        return FlowView(id=row.id, flow=definition.name, status="waiting", prompt=_prompt_of(snapshot),
                        values=self._shown_values(definition, dict(snapshot.values or {})),
                        created_at=aware(row.created_at), updated_at=aware(row.updated_at))

    @staticmethod
    def _ended_view(row: AgentThread) -> FlowView:
        meta = row.meta or {}
        return FlowView(id=row.id, flow=str(meta.get("flow")), status=str(meta.get("flow_status")),
                        result=meta.get("flow_result"), error=meta.get("flow_error"),
                        values=dict(row.values or {}) if isinstance(row.values, dict) else {},
                        created_at=aware(row.created_at), updated_at=aware(row.updated_at))
