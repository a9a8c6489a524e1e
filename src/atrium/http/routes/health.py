"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from atrium.http.schemas.operations import Health, Readiness
from atrium.store.health import database_answers

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
async def health() -> Health:
    return Health(status="ok")


@router.get("/ready", response_model=Readiness, responses={503: {"model": Readiness, "description": "Not ready: "
                                                                "the failing checks are false."}})
async def ready(request: Request, response: Response) -> Readiness:
    """200 when the database answers, the index is loaded and the models can serve; 503 otherwise."""
    services = getattr(request.app.state, "services", None)
    checks = {"database": False, "index": False, "embedder": False, "chat_model": False}
    if services is not None and request.app.state.ready:
        checks["database"] = await database_answers(services.db)
        checks["index"] = services.index is not None
        checks["embedder"] = services.embedder.dimensions > 0
        try:
            checks["chat_model"] = bool(await services.gateway.chat.ready())
        except Exception:
            checks["chat_model"] = False
    ok = all(checks.values())
    response.status_code = 200 if ok else 503
    return Readiness(status="ready" if ok else "not_ready", checks=checks)
