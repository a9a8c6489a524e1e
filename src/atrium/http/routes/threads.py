"""``/threads``: the agents API's threads, their state and history, in the LangGraph platform's shape.

A thread is its creator's (``visibility`` ``private``, the default) or readable by the organisation
(``org``); only its owner changes, runs or deletes it (``403`` for another reader). A thread the caller may
not read is ``404``, whoever asks (see ``atrium.agents.threads``).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from atrium.agents import threads
from atrium.http.deps import AgentsDep, DatabaseDep, PrincipalDep
from atrium.http.schemas.agents import (
    CheckpointId,
    HistoryQuery,
    StateUpdate,
    StateUpdated,
    ThreadCreate,
    ThreadList,
    ThreadPatch,
    ThreadSearch,
    ThreadStateList,
    ThreadStateView,
    ThreadView,
)
from atrium.http.schemas.errors import AUTHENTICATED, BODY, error_responses

router = APIRouter(prefix="/threads", tags=["agents"], responses=AUTHENTICATED)
ThreadIdPath = Annotated[str, Path(min_length=1, max_length=64)]
_NOT_FOUND = error_responses(404)


@router.post("", response_model=ThreadView, responses={**BODY, **error_responses(409)})
async def create_thread(body: ThreadCreate, principal: PrincipalDep, db: DatabaseDep) -> ThreadView:
    """A new thread of the caller's (``metadata.graph_id`` names its graph before its first run)."""
    row = await threads.create_thread(db, principal, thread_id=body.thread_id, metadata=body.metadata,
                                      visibility=body.visibility, if_exists=body.if_exists)
    return ThreadView.of(row)


@router.post("/search", response_model=ThreadList, responses=BODY)
async def search_threads(body: ThreadSearch, principal: PrincipalDep, db: DatabaseDep) -> ThreadList:
    """The threads the caller may read: its own and the organisation's visible ones."""
    rows = await threads.search_threads(db, principal, metadata=body.metadata, status=body.status, ids=body.ids,
                                        limit=body.limit, offset=body.offset, sort_by=body.sort_by,
                                        sort_order=body.sort_order)
    return ThreadList([ThreadView.of(row) for row in rows])


@router.get("/{thread_id}", response_model=ThreadView, responses=_NOT_FOUND)
async def get_thread(thread_id: ThreadIdPath, principal: PrincipalDep, db: DatabaseDep) -> ThreadView:
    return ThreadView.of(await threads.get_thread(db, principal, thread_id))


@router.patch("/{thread_id}", response_model=ThreadView, responses={**BODY, **_NOT_FOUND})
async def update_thread(thread_id: ThreadIdPath, body: ThreadPatch, principal: PrincipalDep,
                        db: DatabaseDep) -> ThreadView:
    """Merge ``metadata`` into the thread's; change its ``visibility``."""
    row = await threads.update_thread(db, principal, thread_id, metadata=body.metadata, visibility=body.visibility)
    return ThreadView.of(row)


@router.delete("/{thread_id}", status_code=204, responses=_NOT_FOUND)
async def delete_thread(thread_id: ThreadIdPath, principal: PrincipalDep, agents: AgentsDep) -> None:
    """Delete the thread: its runs stop, its runs and checkpoints are erased."""
    await agents.delete_thread(principal, thread_id)


@router.get("/{thread_id}/state", response_model=ThreadStateView, responses=_NOT_FOUND)
async def get_state(thread_id: ThreadIdPath, principal: PrincipalDep, agents: AgentsDep,
                    subgraphs: Annotated[bool, Query()] = False) -> ThreadStateView:
    return ThreadStateView(**await agents.states.get(principal, thread_id, subgraphs=subgraphs))


@router.get("/{thread_id}/state/{checkpoint_id}", response_model=ThreadStateView, responses=_NOT_FOUND)
async def get_state_at(thread_id: ThreadIdPath, checkpoint_id: Annotated[CheckpointId, Path()],
                       principal: PrincipalDep, agents: AgentsDep,
                       subgraphs: Annotated[bool, Query()] = False) -> ThreadStateView:
    """The state at an earlier checkpoint."""
    return ThreadStateView(**await agents.states.get(principal, thread_id, checkpoint_id=checkpoint_id,
                                                     subgraphs=subgraphs))


@router.post("/{thread_id}/state", response_model=StateUpdated,
             responses={**BODY, **_NOT_FOUND, **error_responses(409)})
async def update_state(thread_id: ThreadIdPath, body: StateUpdate, principal: PrincipalDep,
                       agents: AgentsDep) -> StateUpdated:
    """Write values into the thread's state as node ``as_node`` (a new checkpoint; from ``checkpoint_id``
    when given: a fork of that one)."""
    updated = await agents.states.update(principal, thread_id, values=body.values, as_node=body.as_node,
                                         checkpoint_id=body.target())
    return StateUpdated(**updated)


@router.post("/{thread_id}/history", response_model=ThreadStateList, responses={**BODY, **_NOT_FOUND})
async def post_history(thread_id: ThreadIdPath, body: HistoryQuery, principal: PrincipalDep,
                       agents: AgentsDep) -> ThreadStateList:
    """The thread's checkpoints, newest first (``before`` one, matching ``metadata``)."""
    states = await agents.states.history(principal, thread_id, limit=body.limit, before=body.before_id(),
                                         metadata=body.metadata,
                                         checkpoint_id=body.checkpoint.checkpoint_id if body.checkpoint else None)
    return ThreadStateList([ThreadStateView(**state) for state in states])


@router.get("/{thread_id}/history", response_model=ThreadStateList, responses=_NOT_FOUND)
async def get_history(thread_id: ThreadIdPath, principal: PrincipalDep, agents: AgentsDep,
                      limit: Annotated[int, Query(ge=1, le=1000)] = 10,
                      before: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
                      ) -> ThreadStateList:
    states = await agents.states.history(principal, thread_id, limit=limit, before=before)
    return ThreadStateList([ThreadStateView(**state) for state in states])
