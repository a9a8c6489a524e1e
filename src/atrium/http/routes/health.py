"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from atrium.http.schemas.operations import Health, Readiness

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health)
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready", response_model=Readiness, responses={503: {"model": Readiness, "description": "Not ready: "
                                                                "the failing checks are false."}})
async def ready(request: Request) -> JSONResponse:
    """200 when the database answers, the index is loaded and the models can serve; 503 otherwise."""
    services = getattr(request.app.state, "services", None)
    checks = {"database": False, "index": False, "embedder": False, "chat_model": False}
    if services is not None and request.app.state.ready:
        try:
            async with services.db.system_session() as session:
                await session.execute(text("SELECT 1"))
            checks["database"] = True
        except Exception:
            checks["database"] = False
        checks["index"] = services.index is not None
        checks["embedder"] = services.embedder.dimensions > 0
        try:
            checks["chat_model"] = bool(await services.gateway.chat.ready())
        except Exception:
            checks["chat_model"] = False
    ok = all(checks.values())
    return JSONResponse({"status": "ready" if ok else "not_ready", "checks": checks},
                        status_code=200 if ok else 503)
