"""Atrium's one error tree.

Every failure a caller can see is an ``AppError``; the HTTP edge (``atrium.http.errors``) maps it to
``{"error": {"code", "message", "request_id"}}`` with the status below. Adapters translate vendor
exceptions into these (``raise ModelUnavailable(...) from exc``) so callers catch only ours. A failure
that travels as a code (a stream's ``ErrorEvent.code``, a failed answer run) comes back to its class with
:func:`error_class` / :func:`error_for`, the one mapping every edge uses.

    AppError (500 internal_error)
    ├── InvalidRequest (422 invalid_request)
    │   └── PayloadTooLarge (413 payload_too_large)
    ├── Unauthorized (401 unauthorized)
    ├── Forbidden (403 forbidden)
    ├── NotFound (404 not_found)
    ├── Conflict (409 conflict)
    ├── NotReady (503 not_ready)
    │   └── Overloaded (503 overloaded)
    ├── RateLimited (429 rate_limited)
    ├── BudgetExceeded (402 budget_exceeded)
    ├── ContentBlocked (400 content_blocked)
    └── GatewayError (502 upstream_error)
        ├── ContextLengthExceeded (400 context_length_exceeded)
        ├── UpstreamRateLimited (429 rate_limited)
        ├── ModelUnavailable (503 model_unavailable)
        │   └── CircuitOpen (503 circuit_open)
        └── ModelTimeout (504 model_timeout)
"""

from __future__ import annotations


class AppError(Exception):
    """Base of every error Atrium shows to a caller. ``message`` must never hold a secret."""

    status_code = 500
    code = "internal_error"

    def __init__(self, message: str = "Internal error.", *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidRequest(AppError):
    status_code = 422
    code = "invalid_request"


class PayloadTooLarge(InvalidRequest):
    status_code = 413
    code = "payload_too_large"


class Unauthorized(AppError):
    status_code = 401
    code = "unauthorized"


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"


class NotFound(AppError):
    status_code = 404
    code = "not_found"


class Conflict(AppError):
    status_code = 409
    code = "conflict"


class NotReady(AppError):
    status_code = 503
    code = "not_ready"


class Overloaded(NotReady):
    """The server has more work than it can take now (its database connections are all busy past their
    wait): nothing of the request was done; retry after ``RETRY_AFTER_S``."""

    code = "overloaded"
    RETRY_AFTER_S = 2

    def __init__(self, message: str = "The server is overloaded; retry in a few seconds.") -> None:
        super().__init__(message)


class RateLimited(AppError):
    """The caller went over one of Atrium's own limits; ``retry_after`` is in seconds."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str = "Too many requests.", *, retry_after: float | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.headers = headers or {}


class BudgetExceeded(AppError):
    """The call could cost more than what is left of a budget (org, user or key) in its period."""

    status_code = 402
    code = "budget_exceeded"


class ContentBlocked(AppError):
    """A guard refused the content (moderation, PII policy ``block``, prompt injection policy ``refuse``).
    The message says which guard and why, never the offending content itself."""

    status_code = 400
    code = "content_blocked"


class GatewayError(AppError):
    """A model provider failed; ``retryable`` tells wrappers whether another attempt may succeed and
    ``retry_after`` how long the upstream asked to wait (seconds)."""

    status_code = 502
    code = "upstream_error"

    def __init__(self, message: str = "The model provider failed.", *, code: str | None = None,
                 retryable: bool = False, retry_after: float | None = None) -> None:
        super().__init__(message, code=code)
        self.retryable = retryable
        self.retry_after = retry_after


class ContextLengthExceeded(GatewayError):
    status_code = 400
    code = "context_length_exceeded"


class UpstreamRateLimited(GatewayError):
    status_code = 429
    code = "rate_limited"


class ModelUnavailable(GatewayError):
    status_code = 503
    code = "model_unavailable"


class CircuitOpen(ModelUnavailable):
    """The provider's circuit breaker is open: it failed too often, calls are refused until it cools."""

    code = "circuit_open"


class ModelTimeout(GatewayError):
    status_code = 504
    code = "model_timeout"


# The one way back from an error code (an ``ErrorEvent.code`` from the gateway, a failed answer run's code)
# to our error: its class carries the HTTP status, and the compatible APIs' error shapes follow from the
# status and code (``atrium.http.errors``). A code not listed is the upstream's failure: ``GatewayError``.
_BY_CODE: dict[str, type[AppError]] = {
    "rate_limited": UpstreamRateLimited,
    "model_unavailable": ModelUnavailable,
    "circuit_open": CircuitOpen,
    "model_timeout": ModelTimeout,
    "context_length_exceeded": ContextLengthExceeded,
    "model_not_found": NotFound,
    "not_found": NotFound,
    "model_not_allowed": Forbidden,
    "forbidden": Forbidden,
    "invalid_request": InvalidRequest,
    "unsupported_capability": InvalidRequest,
    "content_blocked": ContentBlocked,
    "budget_exceeded": BudgetExceeded,
    "overloaded": Overloaded,
}


def error_class(code: str) -> type[AppError]:
    """The error class for ``code`` (see ``_BY_CODE``)."""
    return _BY_CODE.get(code, GatewayError)


def error_for(code: str, message: str, *, retryable: bool = False, retry_after: float | None = None) -> AppError:
    """The typed error for a failure reported as ``code`` and ``message`` (a stream's ``ErrorEvent``);
    ``retryable`` and ``retry_after`` are kept when it is a model provider's failure."""
    kind = error_class(code)
    if issubclass(kind, GatewayError):
        return kind(message, code=code, retryable=retryable, retry_after=retry_after)
    return kind(message, code=code)
