"""The error bodies, as the OpenAPI document shows them (``atrium.http.errors`` writes them), and the
``responses=`` sets the routers declare.

Atrium's own paths answer ``ErrorResponse`` (a malformed request is a 422 in that shape, not FastAPI's
``HTTPValidationError``); ``/v1/messages`` answers ``AnthropicErrorResponse`` and the other ``/v1/`` paths
``OpenAIErrorResponse``, where a malformed request is a 400.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from atrium.http.schemas.common import View

ResponseSpec = dict[int | str, dict[str, Any]]

_WHEN = {
    400: "Refused: the content was blocked by a guard, the prompt is too long for the model, or the body "
         "cannot be parsed.",
    401: "No credential, or one that is invalid, expired or revoked (with `WWW-Authenticate: Bearer`).",
    402: "A budget (organisation, user or key) is used up.",
    403: "The credential's role or scope does not allow this.",
    404: "No such object, or one the caller may not see.",
    409: "Conflicts with the current state (a name or email already taken, the last owner...).",
    413: "The request body, a field or a file is too large.",
    422: "The request is malformed: a missing or invalid field, parameter or path value.",
    429: "A rate limit is exceeded; `Retry-After` says when to retry.",
    502: "The model provider failed.",
    503: "Atrium is starting, or the model or a needed component is unavailable.",
    504: "The model did not answer in time.",
}


class ErrorDetail(BaseModel):
    code: str
    message: str
    request_id: str | None = None


class ErrorResponse(BaseModel):
    """Every error of Atrium's own API: ``{"error": {"code", "message", "request_id"}}``."""

    error: ErrorDetail


class OpenAIErrorDetail(View):
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    request_id: str | None = None


class OpenAIErrorResponse(View):
    """OpenAI's error shape (the ``/v1/`` paths but ``/v1/messages``)."""

    error: OpenAIErrorDetail


class AnthropicErrorDetail(View):
    type: str
    message: str


class AnthropicErrorResponse(View):
    """Anthropic's error shape (``/v1/messages``)."""

    type: Literal["error"]
    error: AnthropicErrorDetail
    request_id: str | None = None


def error_responses(*statuses: int, model: type[BaseModel] = ErrorResponse) -> ResponseSpec:
    """A ``responses=`` entry per status, each with the error body ``model``."""
    return {status: {"model": model, "description": _WHEN[status]} for status in statuses}


# What every authenticated route of Atrium's API may answer: no or a bad credential, a role too low, a
# malformed request, not started yet. Routers add theirs (404, 409, 413, 429...).
AUTHENTICATED = error_responses(401, 403, 422, 503)
# Routes that take a body: one that cannot be parsed (not UTF-8, not multipart) is a 400, a too large one
# a 413 (the edge refuses it before any parsing).
BODY = error_responses(400, 413)
# Routes that spend model or compute capacity (``LimitedPrincipalDep``): rate limits and budgets too.
LIMITED = error_responses(400, 402, 413, 429)
# Reads a client may repeat in a loop (``CountedPrincipalDep``): counted against requests per minute.
COUNTED = error_responses(429)
# A model call: the guard or the context length (400) and the upstream's failures.
MODEL_CALL = error_responses(400, 502, 503, 504)


def vendor_errors(model: type[BaseModel], *statuses: int) -> ResponseSpec:
    """The vendor paths' errors. ``4XX`` stands for any other client error in the same shape; it also
    keeps FastAPI from listing a 422, which these paths never answer (a malformed body is a 400)."""
    spec = error_responses(*statuses, model=model)
    spec["4XX"] = {"model": model, "description": "Any other client error, in the same shape."}
    return spec
