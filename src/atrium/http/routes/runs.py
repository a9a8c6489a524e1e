"""``/threads/{thread_id}/runs``: runs of an assistant on a thread, in the LangGraph platform's shape.

``POST .../runs`` starts a background run (the run row), ``.../runs/stream`` starts one and streams its
events (Server-Sent Events: ``metadata``, the stream modes asked for, ``error``, ``end``; each with an
``id`` so ``GET .../runs/{run_id}/stream`` with ``Last-Event-ID`` resumes), ``.../runs/wait`` starts one and
answers the thread's values when it ends (with ``__interrupt__`` when the graph waits for input). A run
goes on when its client leaves (unless ``on_disconnect: "cancel"``). Every answer that starts a run names
it in ``Content-Location``. Only a thread's owner starts or cancels its runs; readers of an
organisation-visible thread may list, read and join them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Response
from fastapi.responses import JSONResponse
from sse_starlette import EventSourceResponse

from atrium.accounts.principal import Principal
from atrium.agents.runs import RunRequest
from atrium.agents.service import Agents
from atrium.agents.streaming import STREAM_MODES
from atrium.agents.threads import get_thread
from atrium.errors import AppError, InvalidRequest, error_for
from atrium.http.deps import AgentsDep, CountedPrincipalDep, LimitedPrincipalDep, Offset, PrincipalDep
from atrium.http.schemas.agents import RunCreate, RunList, RunOutput, RunView
from atrium.http.schemas.errors import (
    AUTHENTICATED,
    BODY,
    COUNTED,
    LIMITED,
    ErrorResponse,
    ResponseSpec,
    error_responses,
)
from atrium.store.models import AgentRun

router = APIRouter(prefix="/threads/{thread_id}/runs", tags=["agents"], responses=AUTHENTICATED)
ThreadIdPath = Annotated[str, Path(min_length=1, max_length=64)]
RunIdPath = Annotated[str, Path(min_length=1, max_length=64)]
_NOT_FOUND = error_responses(404)
_STARTS: ResponseSpec = {**LIMITED, **error_responses(404, 409)}
_RUN_FAILED: ResponseSpec = {**error_responses(402, 502, 503, 504),
                             500: {"model": ErrorResponse, "description": "The run failed."}}
_EVENTS: ResponseSpec = {200: {"description": "Server-Sent Events: `metadata`, the stream modes' events, "
                                              "`error` when the run failed, then `end`.",
                               "content": {"text/event-stream": {"schema": {
                                   "$ref": "#/components/schemas/RunStreamEvent"}}}}}
_OUTPUT: ResponseSpec = {200: {"model": RunOutput, "description": "The thread's values when the run ended "
                               "(`__interrupt__`: the interrupts waiting for an answer)."}}


def _request(body: RunCreate) -> RunRequest:
    return RunRequest(assistant_id=body.assistant_id, input=body.input,
                      command=body.command.model_dump() if body.command is not None else None,
                      config=body.config or {}, metadata=body.metadata or {}, stream_modes=body.stream_modes(),
                      checkpoint_id=body.target_checkpoint(), interrupt_before=body.interrupt_before,
                      interrupt_after=body.interrupt_after, multitask_strategy=body.multitask_strategy,
                      if_not_exists=body.if_not_exists)


def _location(run: AgentRun) -> str:
    return f"/threads/{run.thread_id}/runs/{run.id}"


async def _sse(agents: Agents, principal: Principal, thread_id: str, run_id: str, *, after: int = -1,
               modes: list[str] | None = None, cancel_on_disconnect: bool = False) -> AsyncIterator[dict[str, str]]:
    try:
        async for item in agents.runs.events(principal, thread_id, run_id, after=after, modes=modes):
            yield {"event": item.event, "data": json.dumps(item.data, ensure_ascii=False, default=str),
                   "id": str(item.id)}
    finally:
        if cancel_on_disconnect:  # a no-op once the run has ended
            agents.runs.stop_local(run_id)


def _stream_response(agents: Agents, principal: Principal, run: AgentRun, **options: Any) -> EventSourceResponse:
    location = _location(run)
    return EventSourceResponse(_sse(agents, principal, run.thread_id, run.id, **options), ping=15,
                               headers={"Content-Location": location, "Location": f"{location}/stream",
                                        "Cache-Control": "no-store"})


async def _output(agents: Agents, principal: Principal, run: AgentRun) -> dict[str, Any]:
    """The answer of ``wait`` and ``join``: the thread's values, or the run's error."""
    if run.status == "error":
        error = run.error or {}
        code, message = str(error.get("code", "internal_error")), str(error.get("message", "The run failed."))
        raise AppError(message) if code in ("internal_error", "interrupted") else error_for(code, message)
    thread = await get_thread(agents.db, principal, run.thread_id)
    values: dict[str, Any] = dict(thread.values) if isinstance(thread.values, dict) else {}
    waiting = [item for items in (thread.interrupts or {}).values() for item in items]
    if waiting:
        values["__interrupt__"] = waiting
    return values


@router.post("", response_model=RunView, responses={**_STARTS, **BODY})
async def create_run(thread_id: ThreadIdPath, body: RunCreate, principal: LimitedPrincipalDep, agents: AgentsDep,
                     response: Response) -> RunView:
    """Start a background run; join it (``GET .../join``, ``GET .../stream``) or poll it."""
    run = await agents.runs.start(principal, thread_id, _request(body))
    response.headers["Content-Location"] = _location(run)
    return RunView.of(run)


@router.post("/stream", response_model=None, response_class=EventSourceResponse,
             responses={**_STARTS, **BODY, **_EVENTS})
async def stream_run(thread_id: ThreadIdPath, body: RunCreate, principal: LimitedPrincipalDep,
                     agents: AgentsDep) -> EventSourceResponse:
    """Start a run and stream its events."""
    run = await agents.runs.start(principal, thread_id, _request(body))
    return _stream_response(agents, principal, run, cancel_on_disconnect=body.on_disconnect == "cancel")


@router.post("/wait", response_model=None, responses={**_STARTS, **BODY, **_RUN_FAILED, **_OUTPUT})
async def wait_run(thread_id: ThreadIdPath, body: RunCreate, principal: LimitedPrincipalDep,
                   agents: AgentsDep) -> JSONResponse:
    """Start a run and answer the thread's values when it ends."""
    run = await agents.runs.start(principal, thread_id, _request(body))
    finished = await agents.runs.join(principal, thread_id, run.id)
    return JSONResponse(await _output(agents, principal, finished), headers={"Content-Location": _location(run)})


@router.get("", response_model=RunList, responses=_NOT_FOUND)
async def list_runs(thread_id: ThreadIdPath, principal: PrincipalDep, agents: AgentsDep,
                    limit: Annotated[int, Query(ge=1, le=1000)] = 10, offset: Offset = 0,
                    status: Annotated[str | None, Query(max_length=20)] = None) -> RunList:
    rows = await agents.runs.list_runs(principal, thread_id, limit=limit, offset=offset, status=status)
    return RunList([RunView.of(row) for row in rows])


@router.get("/{run_id}", response_model=RunView, responses=_NOT_FOUND)
async def get_run(thread_id: ThreadIdPath, run_id: RunIdPath, principal: PrincipalDep, agents: AgentsDep) -> RunView:
    return RunView.of(await agents.runs.get(principal, thread_id, run_id))


@router.post("/{run_id}/cancel", status_code=202, response_model=RunView, responses=error_responses(404, 409))
async def cancel_run(thread_id: ThreadIdPath, run_id: RunIdPath, principal: PrincipalDep, agents: AgentsDep,
                     wait: Annotated[bool, Query()] = False,
                     action: Annotated[str, Query(pattern="^(interrupt|rollback)$")] = "interrupt") -> RunView:
    """Cancel a pending or running run: the run as it stands then (with ``wait``: ended; with
    ``rollback``: ended and deleted)."""
    return RunView.of(await agents.runs.cancel(principal, thread_id, run_id, wait=wait, action=action))


@router.get("/{run_id}/join", response_model=None,
            responses={**_NOT_FOUND, **_RUN_FAILED, **_OUTPUT, **COUNTED})
async def join_run(thread_id: ThreadIdPath, run_id: RunIdPath, principal: CountedPrincipalDep,
                   agents: AgentsDep) -> JSONResponse:
    """Wait for the run to end; the thread's values (as ``wait`` answers)."""
    finished = await agents.runs.join(principal, thread_id, run_id)
    return JSONResponse(await _output(agents, principal, finished))


@router.get("/{run_id}/stream", response_model=None, response_class=EventSourceResponse,
            responses={**_NOT_FOUND, **_EVENTS, **COUNTED})
async def join_stream(thread_id: ThreadIdPath, run_id: RunIdPath, principal: CountedPrincipalDep,
                      agents: AgentsDep,
                      stream_mode: Annotated[list[str] | None, Query(max_length=10)] = None,
                      cancel_on_disconnect: Annotated[bool, Query()] = False,
                      last_event_id: Annotated[str | None, Header(max_length=20)] = None) -> EventSourceResponse:
    """The run's events from the start (after ``Last-Event-ID`` when given) until it ends."""
    modes = [mode for mode in stream_mode or [] if mode]
    if any(mode not in STREAM_MODES for mode in modes):
        raise InvalidRequest(f"stream_mode must be among {', '.join(STREAM_MODES)}.")
    after = int(last_event_id) if last_event_id and last_event_id.isdigit() else -1
    run = await agents.runs.get(principal, thread_id, run_id)
    return _stream_response(agents, principal, run, after=after, modes=modes or None,
                            cancel_on_disconnect=cancel_on_disconnect)
