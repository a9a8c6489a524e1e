"""Map every failure to an error body; never a stack trace.

Atrium's own API (``/api/v1``, ``/health``...) answers ``{"error": {"code", "message", "request_id"}}``.
The vendor-compatible paths answer in their vendor's shape, so the official SDKs raise their typed errors:

* ``/v1/messages`` (Anthropic's format): ``{"type": "error", "error": {"type", "message"}, "request_id"}``;
* every other ``/v1/`` path (OpenAI's format): ``{"error": {"message", "type", "param", "code",
  "request_id"}}``, and a malformed body is a 400 there (as OpenAI answers), not a 422.

Rate-limit answers carry ``Retry-After`` whenever the error knows how long to wait.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from atrium.errors import AppError, GatewayError, Overloaded, RateLimited
from atrium.telemetry.logging import redact, request_id_var

log = logging.getLogger(__name__)

_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")
_HTTP_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 406: "not_acceptable", 409: "conflict", 413: "payload_too_large",
               415: "unsupported_media_type", 429: "rate_limited"}

_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "insufficient_quota",
                 403: "permission_error",
                 404: "invalid_request_error", 405: "invalid_request_error", 409: "invalid_request_error",
                 413: "invalid_request_error", 415: "invalid_request_error", 429: "rate_limit_error"}
_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
                    403: "permission_error",
                    404: "not_found_error", 405: "invalid_request_error", 409: "invalid_request_error",
                    413: "request_too_large", 415: "invalid_request_error", 429: "rate_limit_error",
                    503: "overloaded_error", 529: "overloaded_error"}
# OpenAI's own codes where a client may test for them; our code otherwise.
_OPENAI_CODES = {"unauthorized": "invalid_api_key", "rate_limited": "rate_limit_exceeded",
                 "budget_exceeded": "insufficient_quota"}


def error_body(code: str, message: str) -> dict[str, dict[str, str | None]]:
    return {"error": {"code": code, "message": redact(message), "request_id": request_id_var.get()}}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def openai_error_type(status: int) -> str:
    return _OPENAI_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")


def anthropic_error_type(status: int) -> str:
    return _ANTHROPIC_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")


def openai_error_body(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": openai_error_type(status), "param": param,
                      "code": _OPENAI_CODES.get(code, code), "request_id": request_id_var.get()}}


def anthropic_error_body(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": anthropic_error_type(status), "message": message},
            "request_id": request_id_var.get()}


def vendor_of(path: str) -> str:
    """``anthropic``, ``openai`` or ``atrium``: whose error shape a path answers in."""
    if path == "/v1/messages" or path.startswith("/v1/messages/"):
        return "anthropic"
    if path.startswith("/v1/"):
        return "openai"
    return "atrium"


def error_response_for(path: str, status: int, code: str, message: str, *,
                       headers: dict[str, str] | None = None, param: str | None = None) -> JSONResponse:
    """The error in the shape ``path`` speaks (see the module docstring). The message is redacted: no
    error body echoes a key, token or password, even one an upstream or a validator put in it."""
    message = redact(message)
    param = redact(param) if param else param
    vendor = vendor_of(path)
    if vendor == "atrium":
        return error_response(status, code, message, headers)
    if status == 422:  # both vendors answer a request they cannot accept with 400
        status = 400
    body = (anthropic_error_body(status, message) if vendor == "anthropic"
            else openai_error_body(status, code, message, param))
    return JSONResponse(body, status_code=status, headers=headers)


def _shown(part: object) -> str:
    """A location part as shown in an error. A name the client chose (an unexpected field, a dict key) is
    shown only when it looks like a field name: a client that sent a secret as a key gets it not back."""
    text = str(part)
    return text if isinstance(part, int) or _FIELD_NAME.match(text) else "(field)"


def error_headers(exc: AppError) -> dict[str, str] | None:
    """``WWW-Authenticate`` on 401; the limiter's headers and ``Retry-After`` on rate limits."""
    headers: dict[str, str] = {}
    if exc.status_code == 401:
        headers["WWW-Authenticate"] = "Bearer"
    retry_after = None
    if isinstance(exc, RateLimited):
        headers.update(exc.headers)
        retry_after = exc.retry_after
    elif isinstance(exc, GatewayError):
        retry_after = exc.retry_after
    elif isinstance(exc, Overloaded):
        retry_after = exc.RETRY_AFTER_S
    if retry_after is not None and not any(name.lower() == "retry-after" for name in headers):
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return headers or None


def app_error_response(path: str, exc: AppError) -> JSONResponse:
    return error_response_for(path, exc.status_code, exc.code, exc.message, headers=error_headers(exc))


def install_error_handlers(app: FastAPI) -> None:
    """Exception handlers (unexpected errors that escape them are answered by the edge middleware)."""

    @app.exception_handler(AppError)
    async def app_error(request: Request, exc: AppError) -> JSONResponse:
        if exc.status_code >= 500:
            log.warning("request failed: %s (%s)", exc.code, exc.message)
        return app_error_response(request.url.path, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Where and what, never pydantic's ``input`` (it echoes the value sent: a password, a key).
        problems = []
        param = None
        for item in exc.errors()[:5]:
            where = ".".join(_shown(part) for part in item.get("loc", ()) if part != "body")
            param = param or where or None
            problems.append(f"{where or 'body'}: {item.get('msg', 'invalid')}")
        return error_response_for(request.url.path, 422, "invalid_request",
                                  "; ".join(problems) or "Invalid request.", param=param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        message = exc.detail if isinstance(exc.detail, str) else "Request failed."
        return error_response_for(request.url.path, exc.status_code, code, message,
                                  headers=dict(exc.headers or {}) or None)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response_for(request.url.path, 500, "internal_error", "Internal error.")
