"""Admin endpoints for the gateway: circuit breaker states (shared across replicas in the scale profile)
and a manual reset. Breakers are per provider, shared by every tenant, so only the platform admin (an
unscoped owner of the first organisation) may reset one; any org admin may look."""

from __future__ import annotations

from fastapi import APIRouter

from atrium.errors import Forbidden, NotFound
from atrium.http.deps import AccountsDep, GatewayDep, PrincipalDep, require_role
from atrium.http.schemas.errors import AUTHENTICATED, error_responses
from atrium.http.schemas.operations import BreakerList, BreakerState

router = APIRouter(prefix="/api/v1/admin/gateway", tags=["admin"], dependencies=[require_role("admin")],
                   responses=AUTHENTICATED)


@router.get("/breakers", response_model=BreakerList)
async def breakers(gateway: GatewayDep) -> BreakerList:
    return BreakerList(breakers=[BreakerState.model_validate(state) for state in await gateway.breaker_states()])


@router.post("/breakers/{provider}/reset", response_model=BreakerState, responses=error_responses(404))
async def reset_breaker(provider: str, gateway: GatewayDep, accounts: AccountsDep,
                        principal: PrincipalDep) -> BreakerState:
    if not await accounts.is_platform_admin(principal):
        raise Forbidden("Breakers are shared by every tenant: only the platform admin can reset one.")
    if provider not in {entry.provider for entry in gateway.catalogue.entries.values()}:
        raise NotFound(f"No provider named {provider!r}.")
    await gateway.breakers.get(provider).reset()
    states = await gateway.breaker_states()
    return BreakerState.model_validate(next(state for state in states if state["provider"] == provider))
