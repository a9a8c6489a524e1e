"""Admin endpoints for the gateway: circuit breaker states (shared across replicas in the scale profile)
and a manual reset."""

from __future__ import annotations

from fastapi import APIRouter

from atrium.errors import NotFound
from atrium.http.deps import ServicesDep, require_role

router = APIRouter(prefix="/api/v1/admin/gateway", tags=["admin"], dependencies=[require_role("admin")])


@router.get("/breakers")
async def breakers(services: ServicesDep) -> dict[str, object]:
    return {"breakers": await services.gateway.breaker_states()}


@router.post("/breakers/{provider}/reset")
async def reset_breaker(provider: str, services: ServicesDep) -> dict[str, object]:
    if provider not in {entry.provider for entry in services.gateway.catalogue.entries.values()}:
        raise NotFound(f"No provider named {provider!r}.")
    await services.gateway.breakers.get(provider).reset()
    states = await services.gateway.breaker_states()
    return next(state for state in states if state["provider"] == provider)
