"""``GET /metrics``: Prometheus text format. Labels carry no tenant, user or key ids. The shared states
(breakers, job queue depths) are read from their stores at each scrape."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from atrium.http.deps import GatewayDep, JobsDep, MetricsDep

router = APIRouter(tags=["operations"])


@router.get("/metrics", include_in_schema=False)
async def metrics(gateway: GatewayDep, jobs: JobsDep, metrics: MetricsDep) -> Response:
    await gateway.breaker_states()  # refresh the breaker gauges from the (possibly shared) store
    metrics.set_jobs(await jobs.depths())
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
