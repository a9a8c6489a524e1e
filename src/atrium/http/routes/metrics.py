"""``GET /metrics``: Prometheus text format. Labels carry no tenant, user or key ids."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from atrium.http.deps import GatewayDep, MetricsDep

router = APIRouter(tags=["operations"])


@router.get("/metrics", include_in_schema=False)
async def metrics(gateway: GatewayDep, metrics: MetricsDep) -> Response:
    await gateway.breaker_states()  # refresh the breaker gauges from the (possibly shared) store
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
