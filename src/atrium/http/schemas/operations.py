"""Liveness, readiness and the gateway's circuit breakers."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from atrium.http.schemas.common import View


class Health(View):
    status: Literal["ok"]


class Readiness(View):
    status: Literal["ready", "not_ready"]
    checks: dict[str, bool] = Field(description="`database`, `index`, `embedder`, `chat_model`.")


class BreakerState(View):
    provider: str
    state: Literal["closed", "open", "half_open"]
    failures: int
    opened_at: float | None = Field(description="In the breaker's clock (monotonic in-process, Unix time "
                                                "with Redis).")
    retry_in_s: float | None


class BreakerList(View):
    breakers: list[BreakerState]
