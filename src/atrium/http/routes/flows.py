"""Guided flows: start one, answer its prompts one at a time, read where it stands, cancel it.

A flow belongs to whoever started it: anyone else (admins included) gets ``404``. ``onboarding`` needs the
admin role (it creates a member's account); ``project`` the member role. Starting and answering may call
the model (suggestions), so they count against rate limits and budgets.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from atrium.http.deps import FlowsDep, LimitedPrincipalDep, PrincipalDep, ResourceId
from atrium.http.schemas.errors import AUTHENTICATED, BODY, LIMITED, MODEL_CALL, error_responses
from atrium.http.schemas.flows import FlowAnswerBody, FlowDefinitionList, FlowDefinitionView, FlowStateView

router = APIRouter(prefix="/api/v1/flows", tags=["flows"], responses=AUTHENTICATED)
FlowName = Annotated[str, Path(min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9_-]*$")]
_NOT_FOUND = error_responses(404)
_CONFLICT = error_responses(404, 409)


@router.get("", response_model=FlowDefinitionList)
async def list_flows(principal: PrincipalDep, flows: FlowsDep) -> FlowDefinitionList:
    """The flows this server offers, with their steps."""
    return FlowDefinitionList(flows=[FlowDefinitionView.model_validate(definition.describe())
                                     for definition in flows.definitions.values()])


@router.post("/{flow_name}", status_code=201, response_model=FlowStateView,
             responses={**LIMITED, **MODEL_CALL, **_NOT_FOUND})
async def start(flow_name: FlowName, principal: LimitedPrincipalDep, flows: FlowsDep) -> FlowStateView:
    """Start a flow: its id and its first prompt."""
    return FlowStateView.of(await flows.start(principal, flow_name))


@router.get("/{flow_id}", response_model=FlowStateView, responses=_NOT_FOUND)
async def get_flow(flow_id: ResourceId, principal: PrincipalDep, flows: FlowsDep) -> FlowStateView:
    """Where the flow stands: its current prompt while it waits, its result once done."""
    return FlowStateView.of(await flows.get(principal, flow_id))


@router.post("/{flow_id}/answer", response_model=FlowStateView,
             responses={**BODY, **LIMITED, **MODEL_CALL, **_CONFLICT})
async def answer(flow_id: ResourceId, body: FlowAnswerBody, principal: LimitedPrincipalDep,
                 flows: FlowsDep) -> FlowStateView:
    """Answer the current prompt: the next prompt (with ``error`` set and the same step if the answer was
    refused), or the result. ``409`` once the flow has ended, or while another answer is being handled."""
    return FlowStateView.of(await flows.answer(principal, flow_id, body.answer))


@router.post("/{flow_id}/cancel", response_model=FlowStateView, responses=_CONFLICT)
async def cancel(flow_id: ResourceId, principal: PrincipalDep, flows: FlowsDep) -> FlowStateView:
    """Cancel a waiting flow; what it collected is erased. Cancelling a cancelled flow changes nothing."""
    return FlowStateView.of(await flows.cancel(principal, flow_id))
