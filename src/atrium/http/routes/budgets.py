"""Budgets: admins set spending caps per organisation, user and API key (``/api/v1/admin/budgets``), and
every caller can see what is left of its own (``GET /api/v1/budget``). See docs/limits-and-budgets.md.
A division-scoped admin manages only its division's users' and keys' budgets (``atrium.guard.budgets.admin``).

Amounts are USD in requests (``limit_usd``, up to 6 decimals) and both USD and exact integer micro-USD in
answers.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from atrium.guard.budgets.admin import BudgetSpec
from atrium.guard.budgets.ledger import MICRO
from atrium.http.deps import BudgetAdminDep, ClientIp, Offset, PrincipalDep, SettingsDep, require_role
from atrium.http.schemas.budgets import BudgetList, BudgetView, OwnBudgets
from atrium.http.schemas.errors import AUTHENTICATED, BODY, error_responses

router = APIRouter(tags=["budgets"], responses=AUTHENTICATED)
_NOT_FOUND = error_responses(404)
_admin = [require_role("admin")]

BudgetId = Annotated[str, Path(min_length=1, max_length=32)]
SubjectId = Annotated[str, Field(min_length=1, max_length=32)]


class BudgetBody(BaseModel):
    """Create or change the budget of ``(scope, subject_id, period)``."""

    model_config = ConfigDict(extra="forbid")
    scope: Literal["org", "user", "key"]
    subject_id: SubjectId | None = None  # org: may be omitted (the caller's organisation)
    period: Literal["day", "month", "total"]
    limit_usd: Decimal = Field(ge=0, le=1_000_000_000, decimal_places=6)


@router.put("/api/v1/admin/budgets", dependencies=_admin, response_model=BudgetView, responses={
    201: {"model": BudgetView, "description": "Created: there was no budget for this scope, subject and period."},
    **BODY, **_NOT_FOUND})
async def set_budget(body: BudgetBody, ip: ClientIp, principal: PrincipalDep, budgets: BudgetAdminDep,
                     response: Response) -> BudgetView:
    micro = int((body.limit_usd * MICRO).to_integral_value(rounding=ROUND_HALF_UP))
    view, created = await budgets.set(
        principal, BudgetSpec(scope=body.scope, subject_id=body.subject_id, period=body.period,
                              limit_micro_usd=micro), ip=ip)
    response.status_code = 201 if created else 200
    return BudgetView.of(view)


@router.get("/api/v1/admin/budgets", dependencies=_admin, response_model=BudgetList)
async def list_budgets(principal: PrincipalDep, budgets: BudgetAdminDep,
                       scope: Annotated[Literal["org", "user", "key"] | None, Query()] = None,
                       subject_id: Annotated[str | None, Query(min_length=1, max_length=32)] = None,
                       limit: Annotated[int, Query(ge=1, le=500)] = 100,
                       offset: Offset = 0) -> BudgetList:
    views = await budgets.listing(principal, scope=scope, subject_id=subject_id, limit=limit, offset=offset)
    return BudgetList(budgets=[BudgetView.of(view) for view in views])


@router.delete("/api/v1/admin/budgets/{budget_id}", dependencies=_admin, status_code=204, response_class=Response,
               responses=_NOT_FOUND)
async def delete_budget(budget_id: BudgetId, ip: ClientIp, principal: PrincipalDep, budgets: BudgetAdminDep) -> None:
    await budgets.delete(principal, budget_id, ip=ip)


@router.post("/api/v1/admin/budgets/{budget_id}/reset", dependencies=_admin, response_model=BudgetView,
             responses=_NOT_FOUND)
async def reset_budget(budget_id: BudgetId, ip: ClientIp, principal: PrincipalDep,
                       budgets: BudgetAdminDep) -> BudgetView:
    return BudgetView.of(await budgets.reset(principal, budget_id, ip=ip))


@router.get("/api/v1/budget", response_model=OwnBudgets)
async def own_budget(principal: PrincipalDep, budgets: BudgetAdminDep, settings: SettingsDep) -> OwnBudgets:
    """The caller's budgets (its organisation's, its user's, its key's) with what is left in each."""
    views = await budgets.own(principal)
    return OwnBudgets(enforced=settings.budgets.enabled, budgets=[BudgetView.of(view) for view in views])
