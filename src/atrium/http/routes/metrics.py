"""``GET /metrics``: Prometheus text format. Labels carry no tenant, user or key ids."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from atrium.http.deps import ServicesDep

router = APIRouter(tags=["operations"])


@router.get("/metrics", include_in_schema=False)
async def metrics(services: ServicesDep) -> Response:
    await services.gateway.breaker_states()  # refresh the breaker gauges from the (possibly shared) store
    return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)
