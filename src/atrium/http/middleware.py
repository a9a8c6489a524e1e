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
  connection.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atrium.http.errors import error_response_for
from atrium.telemetry.logging import request_id_var

log = logging.getLogger(__name__)

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


class _TooLarge(StarletteHTTPException):
    """Raised from ``receive``; an HTTPException so FastAPI's body parsing passes it through as 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Request body exceeds {limit} bytes.")


class EdgeMiddleware:
    def __init__(self, app: ASGIApp, limit_for: Callable[[str], int], *, pid_header: bool = False) -> None:
        self.app = app
        self.limit_for = limit_for
        # ``server.pid_header``: which process answered (tests of several processes)
        self.extra_headers = [(b"x-atrium-pid", str(os.getpid()).encode())] if pid_header else []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _SAFE_REQUEST_ID.match(incoming) else os.urandom(16).hex()
        token = request_id_var.set(request_id)
        try:
            if scope["type"] == "http":
                await self._http(scope, receive, send, request_id)
            else:
                await self.app(scope, receive, send)
        finally:
            request_id_var.reset(token)

    async def _http(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> None:
        state = scope.setdefault("state", {})
        limit = self.limit_for(scope["path"])
        started = False

        async def edge_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
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


async def _reject(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    """413 in the error shape of the path (Atrium's, OpenAI's or Anthropic's)."""
    response = error_response_for(scope["path"], 413, "payload_too_large", f"Request body exceeds {limit} bytes.")
    await response(scope, receive, send)
