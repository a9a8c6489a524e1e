"""The edge as one pure ASGI middleware (one layer: every streamed chunk passes through each layer).

For every HTTP request it:

* takes a sane incoming ``X-Request-ID`` or makes one, sets it for logs and adds it to the response;
* adds the headers a dependency left in ``request.state.response_headers`` (rate-limit quota), so they
  reach streamed and error responses too;
* enforces the path's body-size limit on the bytes actually received, not only on ``Content-Length``,
  so a chunked upload cannot slip past it (413 in the path's error shape);
* answers an unhandled exception with a 500 in the path's error shape, carrying the request id
  (Starlette's own last-resort handler runs outside every middleware and would send neither). A failure
  after the response began cannot be answered any more: it is raised on, and the server drops the
  connection;
* counts the request in ``atrium_http_requests_total`` and ``atrium_http_request_seconds`` by method,
  route template and status once its body is sent, and an SSE response in ``atrium_http_open_streams``
  while it runs (``telemetry/metrics.py``);
* with tracing on, puts the request id on the server span (``atrium.request_id``), so a log line and its
  trace find each other both ways.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable

from opentelemetry import trace
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atrium.http.errors import error_response_for
from atrium.telemetry.logging import request_id_var
from atrium.telemetry.metrics import UNMATCHED_ROUTE, Metrics

log = logging.getLogger(__name__)

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _TooLarge(StarletteHTTPException):
    """Raised from ``receive``; an HTTPException so FastAPI's body parsing passes it through as 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body exceeds {limit} bytes.")


def route_of(scope: Scope) -> str:
    """The template of the route that served ``scope`` (set by the router), never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int], metrics: Metrics | None = None,
                 traced: bool = False, *, pid_header: bool = False) -> None:
        self.app = app
        self.limit_for = limit_for
        self.metrics = metrics
        self.traced = traced
        # ``server.pid_header``: which process answered (tests of several processes)
        self.extra_headers = [(b"x-atrium-pid", str(os.getpid()).encode())] if pid_header else []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else os.urandom(16).hex()
        token = request_id_var.set(request_id)
        if self.traced:
            trace.get_current_span().set_attribute("atrium.request_id", request_id)
        try:
            if scope["type"] == "http":
                await self._http(scope, receive, send, request_id)
            else:
                await self.app(scope, receive, send)
        finally:
            request_id_var.reset(token)

    async def _http(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        metrics = self.metrics
        seen = _Response()
        if metrics is None:
            await self._answer(scope, receive, send, request_id, seen)
            return
        began = time.perf_counter()
        try:
            await self._answer(scope, receive, send, request_id, seen)
        finally:
            if seen.stream is not None:
                metrics.open_stream(seen.stream).dec()
            method = scope["method"]
            metrics.observe_http(method if method in _METHODS else "other", route_of(scope), seen.status or 500,
                                 time.perf_counter() - began)

    async def _answer(self, scope: Scope, receive: Receive, send: Send, request_id: str, seen: _Response) -> None:
        state = scope.setdefault("state", {})
        limit = self.limit_for(scope["path"])
        started = False
        metrics = self.metrics

        async def edge_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                seen.status = message["status"]
                if metrics is not None and _is_event_stream(message):
                    seen.stream = route_of(scope)
                    metrics.open_stream(seen.stream).inc()
                extra = [(k.lower().encode("latin-1"), v.encode("latin-1"))
                         for k, v in state.get("response_headers", {}).items()]
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode()),
                                      *(h for h in extra if h[0] not in present), *self.extra_headers]
            await send(message)

        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await _reject(scope, receive, edge_send, limit)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _TooLarge(limit)
            return message

        try:
            await self.app(scope, limited_receive, edge_send)
        except _TooLarge:
            if not started:
                await _reject(scope, receive, edge_send, limit)
        except Exception as exc:
            if started:
                raise
            log.exception("unhandled error", exc_info=exc)
            await error_response_for(scope["path"], 500, "internal_error", "Internal error.")(
                scope, receive, edge_send)


class _Response:
    """What the edge saw of a response: its status, and the route of an SSE response counted open."""

    __slots__ = ("status", "stream")

    def __init__(self) -> None:
        self.status = 0
        self.stream: str | None = None


def _is_event_stream(message: Message) -> bool:
    for name, value in message.get("headers", ()):
        if name.lower() == b"content-type":
            return bytes(value).startswith(b"text/event-stream")
    return False


async def _reject(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    """413 in the error shape of the path (Atrium's, OpenAI's or Anthropic's)."""
    response = error_response_for(scope["path"], 413, "payload_too_large", f"Request body exceeds {limit} bytes.")
    await response(scope, receive, send)
