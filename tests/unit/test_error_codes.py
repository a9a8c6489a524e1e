"""The one mapping from an error code back to our errors, and the statuses it gives each edge."""

from __future__ import annotations

import pytest

from atrium.errors import GatewayError, error_for
from atrium.gateway.ports import ErrorEvent
from atrium.http.compat.streams import error_from_event
from atrium.http.routes.chat import run_error_status

# code: (status on the compatible APIs, status of a failed /api/v1/chat/ask)
STATUSES = {
    "rate_limited": (429, 502), "model_unavailable": (503, 502), "circuit_open": (503, 502),
    "model_timeout": (504, 504), "context_length_exceeded": (400, 502), "model_not_found": (404, 502),
    "not_found": (404, 502), "model_not_allowed": (403, 502), "forbidden": (403, 502),
    "invalid_request": (422, 502), "unsupported_capability": (422, 502), "content_blocked": (400, 400),
    "budget_exceeded": (402, 402), "upstream_error": (502, 502), "moderation_unavailable": (502, 502),
    "internal_error": (502, 502), "interrupted": (502, 502),
}


@pytest.mark.parametrize("code", sorted(STATUSES))
def test_each_code_has_its_status_at_each_edge(code: str) -> None:
    compat, ask = STATUSES[code]
    error = error_from_event(ErrorEvent(code=code, message="m", retryable=True, retry_after=2.0))
    assert (error.status_code, error.code, error.message) == (compat, code, "m")
    assert run_error_status(code) == ask


def test_a_providers_failure_keeps_retry_hints() -> None:
    error = error_for("rate_limited", "busy", retryable=True, retry_after=3.0)
    assert isinstance(error, GatewayError) and (error.retryable, error.retry_after) == (True, 3.0)
