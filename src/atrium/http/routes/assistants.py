"""``/assistants``: the graphs the agents API serves (read-only: Atrium's assistants are registered in code,
``atrium.agents.registry``), as the LangGraph platform describes them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from atrium.agents.streaming import jsonable
from atrium.http.deps import AgentsDep, PrincipalDep
from atrium.http.schemas.agents import AssistantList, AssistantSearch, AssistantView, GraphView
from atrium.http.schemas.errors import AUTHENTICATED, BODY, error_responses

router = APIRouter(prefix="/assistants", tags=["agents"], responses=AUTHENTICATED)
AssistantId = Annotated[str, Path(min_length=1, max_length=100)]


@router.post("/search", response_model=AssistantList, responses=BODY)
async def search_assistants(body: AssistantSearch, principal: PrincipalDep, agents: AgentsDep) -> AssistantList:
    found = [assistant for assistant in agents.registry.all()
             if (body.graph_id is None or assistant.graph_id == body.graph_id)
             and (body.name is None or body.name.lower() in (assistant.name or assistant.graph_id).lower())
             and all(assistant.metadata.get(key) == value for key, value in (body.metadata or {}).items())]
    return AssistantList([AssistantView.of(assistant) for assistant in found[body.offset:body.offset + body.limit]])


@router.get("/{assistant_id}", response_model=AssistantView, responses=error_responses(404))
async def get_assistant(assistant_id: AssistantId, principal: PrincipalDep, agents: AgentsDep) -> AssistantView:
    return AssistantView.of(agents.registry.get(assistant_id))


@router.get("/{assistant_id}/graph", response_model=GraphView, responses=error_responses(404))
async def get_assistant_graph(assistant_id: AssistantId, principal: PrincipalDep, agents: AgentsDep,
                              xray: Annotated[bool, Query()] = False) -> GraphView:
    """The graph's nodes and edges (``xray`` is accepted; subgraphs are not expanded)."""
    assistant = agents.registry.get(assistant_id)
    async with agents.checkpoints.for_tenant(principal.org_id) as saver:
        drawable = jsonable((await agents.registry.compile(assistant, saver).aget_graph()).to_json())
    return GraphView(nodes=list(drawable.get("nodes", [])), edges=list(drawable.get("edges", [])))
