"""Runs of the agents API: an assistant's graph executed on a thread, in this process, detached from the
request that started it.

``AgentRuns.start`` checks the thread (its owner only), applies the multitask strategy (``reject``: 409
while another run of the thread is pending or running; ``interrupt``/``rollback``: cancel it first;
``enqueue``: wait for it), records the run (``pending``) and the thread (``busy``) in one transaction, and
spawns the execution under the ``RunSupervisor``, so it survives the client's disconnect and is drained
at shutdown. The execution streams the graph into the run's ``RunFeed`` (``atrium.agents.streaming``
formats), and stores the outcome: the state in the checkpointer, the run's status (``success``,
``interrupted`` when the graph waits for input, ``error``, ``cancelled``) and the thread's (``idle``,
``interrupted``, ``error``) with a copy of its values. Joining a run started by another process (the scale
profile) polls its row; its events are only in the process that runs it. Cancelling it is announced on the
``PubSub`` (``agents.cancel``), which every process follows (``listen``); a run nobody answers for in a
moment (its process died) is marked ``cancelled`` by the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from langgraph.types import Command
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.accounts.ownership import principal_session
from atrium.accounts.principal import Principal
from atrium.agents.checkpoints import Checkpoints
from atrium.agents.context import AgentContext
from atrium.agents.feed import FeedEvent, RunFeed
from atrium.agents.registry import Assistant, GraphRegistry
from atrium.agents.streaming import StreamTranslator, graph_modes, jsonable
from atrium.agents.thread_states import interrupts_by_task
from atrium.agents.threads import (
    ACTIVE_RUN_STATUSES,
    active_runs,
    create_thread,
    readable_thread,
    writable_thread,
)
from atrium.conversations.runs import RunSupervisor
from atrium.errors import AppError, Conflict, NotFound
from atrium.store.engine import Database
from atrium.store.models import AgentRun, AgentThread
from atrium.store.ports import PubSub, follow

log = logging.getLogger(__name__)
SERVER_CONFIGURABLE = frozenset({"principal", "endpoint", "searchable", "events", "thread_id", "checkpoint_ns"})
FINISHED_FEED_KEPT_S = 120.0  # how long a finished run's events stay joinable
POLL_S = 0.25  # joining a run of another process: how often its row is read
CANCEL_CHANNEL = "agents.cancel"
ORPHAN_AFTER_S = 3.0  # a cancelled run of another process still running after this: nobody runs it


@dataclass(slots=True)
class RunRequest:
    """What a run does (the platform's run body, validated at the edge)."""

    assistant_id: str
    input: Any = None
    command: dict[str, Any] | None = None
    config: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    stream_modes: list[str] = field(default_factory=lambda: ["values"])
    checkpoint_id: str | None = None
    interrupt_before: list[str] | str | None = None
    interrupt_after: list[str] | str | None = None
    multitask_strategy: str = "reject"
    if_not_exists: str = "reject"

    def payload(self) -> Any:
        if self.command is not None:
            return Command(resume=self.command.get("resume"), update=self.command.get("update"),
                           goto=self.command.get("goto") or ())
        return self.input

    def recorded(self) -> dict[str, Any]:
        return {"input": self.input, "command": self.command, "config": self.config,
                "stream_mode": self.stream_modes, "checkpoint_id": self.checkpoint_id,
                "interrupt_before": self.interrupt_before, "interrupt_after": self.interrupt_after}


@dataclass(slots=True)
class ActiveRun:
    run_id: str
    thread_id: str
    principal: Principal
    assistant: Assistant
    request: RunRequest
    feed: RunFeed
    waits_for: list[str]  # runs of the thread to finish first (enqueue, interrupt)
    task: asyncio.Task[None] | None = None


class AgentRuns:
    """Starts, executes, cancels and joins runs (module doc)."""

    def __init__(self, db: Database, checkpoints: Checkpoints, registry: GraphRegistry,
                 supervisor: RunSupervisor, pubsub: PubSub | None = None) -> None:
        self.db = db
        self.pubsub = pubsub
        self.checkpoints = checkpoints
        self.registry = registry
        self.supervisor = supervisor
        self.shutting_down = False
        self.orphan_after_s = ORPHAN_AFTER_S
        self.keep_checkpoints = 0  # retention: a thread's newest checkpoints kept after each run (0: all)
        self._active: dict[str, ActiveRun] = {}
        self._feeds: dict[str, RunFeed] = {}

    # -- starting ---------------------------------------------------------------------------------------

    async def start(self, principal: Principal, thread_id: str, request: RunRequest) -> AgentRun:
        assistant = self.registry.get(request.assistant_id)
        if request.if_not_exists == "create":
            async with principal_session(self.db, principal) as session:
                exists = await session.scalar(select(AgentThread.id).where(
                    AgentThread.org_id == principal.org_id, AgentThread.id == thread_id))
            if exists is None:
                await create_thread(self.db, principal, thread_id=thread_id, metadata={}, if_exists="do_nothing")
        async with principal_session(self.db, principal) as session:
            thread = await writable_thread(session, principal, thread_id, lock=True)
            earlier = await active_runs(session, principal.org_id, thread_id)
            if earlier and request.multitask_strategy == "reject":
                raise Conflict("The thread has a run in progress (multitask_strategy 'reject').")
            run = AgentRun(org_id=principal.org_id, thread_id=thread_id, assistant_id=assistant.assistant_id,
                           status="pending", multitask_strategy=request.multitask_strategy,
                           meta=dict(request.metadata), kwargs=jsonable(request.recorded()))
            session.add(run)
            thread.status = "busy"
            thread.meta = {**thread.meta, "graph_id": assistant.graph_id, "assistant_id": assistant.assistant_id}
            thread.updated_at = datetime.now(UTC)
            await session.flush()
        if request.multitask_strategy in ("interrupt", "rollback"):
            for other in earlier:
                self._cancel_local(other.id)
        feed = RunFeed(run.id)
        active = ActiveRun(run.id, thread_id, principal, assistant, request, feed, [r.id for r in earlier])
        self._active[run.id] = active
        self._feeds[run.id] = feed
        active.task = self.supervisor.spawn(self._execute(active))
        return run

    # -- executing --------------------------------------------------------------------------------------

    async def _execute(self, run: ActiveRun) -> None:
        status, thread_status, error = "success", "idle", None
        values: Any = None
        interrupts: dict[str, Any] | None = None
        try:
            await self._wait_for(run)
            await self._set_run(run, status="running")
            run.feed.publish("metadata", {"run_id": run.run_id, "attempt": 1})
            snapshot = await self._stream(run)
            values, interrupts = jsonable(snapshot.values), interrupts_by_task(snapshot)
            await self._prune(run)
            if snapshot.interrupts or snapshot.next:
                status = thread_status = "interrupted"
        except asyncio.CancelledError:
            if self.shutting_down:
                status, error = "error", {"code": "interrupted", "message": "The server stopped during the run."}
            else:
                status, error = "cancelled", {"code": "cancelled", "message": "The run was cancelled."}
        except AppError as failure:
            status, thread_status, error = "error", "error", {"code": failure.code, "message": failure.message}
        except Exception:
            log.exception("agent run %s failed", run.run_id)
            status, thread_status = "error", "error"
            error = {"code": "internal_error", "message": "The run failed."}
        try:
            await self._finish(run, status, thread_status, error, values, interrupts)
        except Exception:
            log.exception("agent run %s: its outcome could not be stored", run.run_id)
        finally:
            if error is not None:
                run.feed.publish("error", {"error": error["code"], "message": error["message"]})
            run.feed.publish("end", {"run_id": run.run_id, "status": status})
            run.feed.close()
            self._active.pop(run.run_id, None)
            asyncio.get_running_loop().call_later(FINISHED_FEED_KEPT_S, self._feeds.pop, run.run_id, None)

    async def _stream(self, run: ActiveRun) -> Any:
        request = run.request
        # The server's own keys are never the client's to set: who calls (``principal``), where the model
        # calls are metered (``endpoint``), which collections were resolved (``searchable``), where events go.
        configurable: dict[str, Any] = {
            **{key: value for key, value in request.config.get("configurable", {}).items()
               if key not in SERVER_CONFIGURABLE},
            "thread_id": run.thread_id, "checkpoint_ns": ""}
        if request.checkpoint_id is not None:
            configurable["checkpoint_id"] = request.checkpoint_id
        config: dict[str, Any] = {**{k: v for k, v in request.config.items() if k in ("tags", "recursion_limit")},
                                  "configurable": configurable,
                                  "metadata": {**request.metadata, "run_id": run.run_id,
                                               "assistant_id": run.assistant.assistant_id,
                                               "graph_id": run.assistant.graph_id}}
        translator = StreamTranslator(request.stream_modes)
        context = AgentContext(principal=run.principal, thread_id=run.thread_id, run_id=run.run_id)
        async with self.checkpoints.for_tenant(run.principal.org_id) as saver:
            graph = self.registry.compile(run.assistant, saver)
            async for mode, chunk in graph.astream(  # type: ignore[call-overload]  # modes and names checked at the edge
                    request.payload(), config, stream_mode=graph_modes(request.stream_modes), context=context,
                    interrupt_before=request.interrupt_before, interrupt_after=request.interrupt_after):
                for event, data in translator.translate(mode, chunk):
                    run.feed.publish(event, data)
            for event, data in translator.finish():
                run.feed.publish(event, data)
            return await graph.aget_state({"configurable": {"thread_id": run.thread_id, "checkpoint_ns": ""}})

    async def _prune(self, run: ActiveRun) -> None:
        """Retention, while the thread is still busy (no other run writes its checkpoints): a failure is
        logged, the run's outcome stands, and the next run prunes again."""
        if self.keep_checkpoints <= 0:
            return
        try:
            await self.checkpoints.prune(run.principal.org_id, run.thread_id, self.keep_checkpoints)
        except Exception:
            log.exception("thread %s: old checkpoints could not be pruned", run.thread_id)

    async def _wait_for(self, run: ActiveRun) -> None:
        for other in run.waits_for:
            await self._finished(other, run.principal.org_id)

    async def _set_run(self, run: ActiveRun, **values: Any) -> None:
        async with self.db.tenant_session(run.principal.org_id) as session:
            await session.execute(update(AgentRun).where(AgentRun.org_id == run.principal.org_id,
                                                         AgentRun.id == run.run_id)
                                  .values(updated_at=datetime.now(UTC), **values))

    async def _finish(self, run: ActiveRun, status: str, thread_status: str, error: dict[str, Any] | None,
                      values: Any, interrupts: dict[str, Any] | None) -> None:
        org_id = run.principal.org_id
        async with self.db.tenant_session(org_id) as session:
            await session.execute(update(AgentRun).where(AgentRun.org_id == org_id, AgentRun.id == run.run_id)
                                  .values(status=status, error=error, updated_at=datetime.now(UTC)))
            thread = await session.scalar(select(AgentThread).where(AgentThread.org_id == org_id,
                                                                    AgentThread.id == run.thread_id))
            if thread is None:  # deleted during the run
                return
            later = [r for r in await active_runs(session, org_id, run.thread_id) if r.id != run.run_id]
            thread.status = "busy" if later else thread_status
            if values is not None:
                thread.values, thread.interrupts = values, interrupts
            thread.updated_at = datetime.now(UTC)

    # -- reading, joining, cancelling -------------------------------------------------------------------

    async def get(self, principal: Principal, thread_id: str, run_id: str) -> AgentRun:
        async with principal_session(self.db, principal) as session:
            await readable_thread(session, principal, thread_id)
            return await _run_of(session, principal.org_id, thread_id, run_id)

    async def list_runs(self, principal: Principal, thread_id: str, *, limit: int, offset: int,
                   status: str | None = None) -> list[AgentRun]:
        async with principal_session(self.db, principal) as session:
            await readable_thread(session, principal, thread_id)
            query = select(AgentRun).where(AgentRun.org_id == principal.org_id, AgentRun.thread_id == thread_id)
            if status is not None:
                query = query.where(AgentRun.status == status)
            return list(await session.scalars(query.order_by(AgentRun.created_at.desc(), AgentRun.id)
                                              .limit(limit).offset(offset)))

    async def _finished(self, run_id: str, org_id: str) -> None:
        """Wait for a run to end: its feed here, or (another process runs it) its row."""
        feed = self._feeds.get(run_id)
        if feed is not None:
            await feed.finished.wait()
            return
        while True:
            async with self.db.tenant_session(org_id) as session:
                status = await session.scalar(select(AgentRun.status).where(AgentRun.org_id == org_id,
                                                                            AgentRun.id == run_id))
            if status is None or status not in ACTIVE_RUN_STATUSES:
                return
            await asyncio.sleep(POLL_S)

    async def join(self, principal: Principal, thread_id: str, run_id: str) -> AgentRun:
        """Wait for the run to end; its final row."""
        await self.get(principal, thread_id, run_id)
        await self._finished(run_id, principal.org_id)
        return await self.get(principal, thread_id, run_id)

    async def events(self, principal: Principal, thread_id: str, run_id: str, *, after: int = -1,
                     modes: Collection[str] | None = None) -> AsyncIterator[FeedEvent]:
        """The run's events after ``after`` (see ``RunFeed.listen``); for a run whose events are not here
        (finished long ago, or in another process), ``end`` once it has ended."""
        run = await self.get(principal, thread_id, run_id)
        feed = self._feeds.get(run_id)
        if feed is not None:
            async for item in feed.listen(after=after, modes=modes):
                yield item
            return
        await self._finished(run_id, principal.org_id)
        run = await self.get(principal, thread_id, run_id)
        yield FeedEvent(max(after + 1, 0), "end", {"run_id": run_id, "status": run.status})

    async def cancel(self, principal: Principal, thread_id: str, run_id: str, *, wait: bool,
                     action: str = "interrupt") -> AgentRun:
        """Cancel a pending or running run of the caller's own thread (``rollback``: and delete the run)."""
        async with principal_session(self.db, principal) as session:
            await writable_thread(session, principal, thread_id)
            row = await _run_of(session, principal.org_id, thread_id, run_id)
            if row.status not in ACTIVE_RUN_STATUSES:
                raise Conflict(f"The run has ended ({row.status}).")
        task = self._cancel_local(run_id)
        if task is None:
            await self._cancel_elsewhere(principal.org_id, run_id)
        elif wait or action == "rollback":
            await asyncio.wait([task])
        async with self.db.tenant_session(principal.org_id) as session:
            now = await session.scalar(select(AgentRun).where(AgentRun.org_id == principal.org_id,
                                                              AgentRun.id == run_id))
            if action == "rollback" and now is not None:
                await session.delete(now)
        return now or row

    async def _cancel_elsewhere(self, org_id: str, run_id: str) -> None:
        """Ask the process running ``run_id`` to cancel it; if none has ended it in a moment, nobody runs it
        (its process died): its row says ``cancelled``."""
        if self.pubsub is not None:
            await self.pubsub.publish(CANCEL_CHANNEL, run_id)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._finished(run_id, org_id), self.orphan_after_s)
        async with self.db.tenant_session(org_id) as session:
            orphan = await session.scalar(select(AgentRun).where(
                AgentRun.org_id == org_id, AgentRun.id == run_id, AgentRun.status.in_(ACTIVE_RUN_STATUSES)))
            if orphan is None:
                return
            orphan.status, orphan.updated_at = "cancelled", datetime.now(UTC)
            orphan.error = {"code": "cancelled", "message": "The run was cancelled."}
            await session.flush()
            if not await active_runs(session, org_id, orphan.thread_id):
                await session.execute(update(AgentThread).where(
                    AgentThread.org_id == org_id, AgentThread.id == orphan.thread_id, AgentThread.status == "busy")
                    .values(status="idle", updated_at=datetime.now(UTC)))

    async def listen(self) -> None:
        """Cancel this process's runs that another process was asked to cancel (until cancelled)."""
        if self.pubsub is not None:
            await follow(self.pubsub, CANCEL_CHANNEL, self.stop_local)

    def _cancel_local(self, run_id: str) -> asyncio.Task[None] | None:
        active = self._active.get(run_id)
        if active is None or active.task is None:
            return None
        active.task.cancel()
        return active.task

    async def stop_thread(self, thread_id: str, timeout: float = 5.0) -> None:
        """Cancel the runs of ``thread_id`` this process executes, and wait for them to end."""
        tasks = [task for run_id, run in list(self._active.items()) if run.thread_id == thread_id
                 and (task := self._cancel_local(run_id)) is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    def stop_local(self, run_id: str) -> None:
        """Cancel ``run_id`` if this process runs it: its stream's client left (``on_disconnect:
        "cancel"``), another process announced its cancellation, its thread was deleted."""
        self._cancel_local(run_id)

    async def recover(self) -> int:
        """At start-up (embedded profile, one process): see ``recover_runs``."""
        return await recover_runs(self.db)


async def recover_runs(db: Database) -> int:
    """At start-up, when no other process can be running one (embedded profile): runs a crash left pending
    or running end as ``error`` (``interrupted``), and their threads become ``idle`` again. Their state is
    what the checkpointer kept."""
    async with db.system_session() as session:
        rows = list(await session.scalars(select(AgentRun).where(AgentRun.status.in_(ACTIVE_RUN_STATUSES))))
        for row in rows:
            row.status = "error"
            row.error = {"code": "interrupted", "message": "The server stopped during the run."}
        await session.execute(update(AgentThread).where(AgentThread.status == "busy").values(status="idle"))
    return len(rows)


async def _run_of(session: AsyncSession, org_id: str, thread_id: str, run_id: str) -> AgentRun:
    """The thread's run ``run_id``; ``NotFound`` when it has none of that id."""
    row = await session.scalar(select(AgentRun).where(
        AgentRun.org_id == org_id, AgentRun.thread_id == thread_id, AgentRun.id == run_id))
    if row is None:
        raise NotFound("No such run.")
    return row
