"""One accepted ``WS /ws`` socket's mechanics, apart from what its messages mean (``routes/ws.py``): the
outbox and its writer task (``realtime.outbox``), the reader, the heartbeat, the socket's place in the
hub, errors and closing.

Three tasks serve a socket: the reader (parses and dispatches the client's messages), the writer (the
only one that sends) and the watchdog (every ``realtime.heartbeat_s``: re-checks the credential, sends a
``ping``, and closes the socket when nothing came from the client for ``heartbeat_s +
heartbeat_timeout_s`` (4408), when its outbox overflowed (4008), or when the credential was revoked (4401)).
A forced close never waits for the writer: a client that does not read cannot hold the server up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from typing import Any, NoReturn

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketDisconnected

from atrium.accounts.principal import Principal
from atrium.container import Services
from atrium.errors import AppError, RateLimited, Unauthorized
from atrium.http.deps import principal_for
from atrium.http.errors import error_body
from atrium.realtime.hub import Member
from atrium.realtime.outbox import Outbox
from atrium.telemetry.logging import redact

log = logging.getLogger(__name__)

CLOSE_TOO_BIG = 1009
CLOSE_SLOW = 4008  # the outbox overflowed: the client does not read its events
CLOSE_HEARTBEAT = 4408  # nothing from the client for heartbeat_s + heartbeat_timeout_s
CLOSE_UNAUTHORIZED = 4401
_ABORT_WAIT_S = 1.0
_REASONS = {CLOSE_SLOW: "slow", CLOSE_HEARTBEAT: "heartbeat", CLOSE_UNAUTHORIZED: "unauthorized"}
_GONE = (WebSocketDisconnect, WebSocketDisconnected, OSError, RuntimeError)


class Closed(Exception):
    """The server closed the socket (the reason was already sent): stop serving it."""


def close_reason(message: str) -> str:
    """A close reason: at most 123 bytes of UTF-8 (the protocol's limit), never a secret."""
    return redact(message).encode()[:123].decode(errors="ignore")


class SocketBase:
    """An accepted socket in the hub; subclasses define ``handle`` (one client message)."""

    def __init__(self, websocket: WebSocket, services: Services, principal: Principal, credential: str) -> None:
        self.websocket = websocket
        self.services = services
        self.principal = principal
        self.credential = credential
        realtime = services.settings.realtime
        self.outbox = Outbox(self._send_text, self._close_socket, size=realtime.outbox_events,
                             max_dropped=realtime.max_dropped)
        self.member: Member | None = None
        self.last_heard = time.monotonic()
        self._writer: asyncio.Task[None] | None = None

    async def handle(self, text: str | None, data: bytes | None) -> None:
        raise NotImplementedError

    async def on_end(self) -> None:
        """Called once the socket is done (stop the socket's own work)."""

    # -- serving -------------------------------------------------------------------------------------------

    async def serve(self) -> None:
        """Serve until the client leaves or the server closes the socket; the member leaves the hub. The
        first event (``ready``) is already in the outbox: queued before the socket joined the hub."""
        self._writer = asyncio.create_task(self.outbox.run())
        reader = asyncio.create_task(self._read())
        watchdog = asyncio.create_task(self._watch())
        try:
            await asyncio.wait({reader, watchdog, self._writer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if self.member is not None:
                self.services.realtime.leave(self.member)
            for task in (reader, watchdog):
                task.cancel()
            for task in (reader, watchdog):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self.on_end()
            if not self._writer.done():
                self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._writer

    async def _read(self) -> None:
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                self.last_heard = time.monotonic()
                try:
                    await self.handle(message.get("text"), message.get("bytes"))
                except (Closed, *_GONE):
                    raise
                except Exception:  # e.g. the database failing a check: this message fails, not the socket
                    log.exception("WebSocket message failed")
                    await self.send_error(AppError("Internal error."), None)
        except (Closed, *_GONE):
            return

    async def _watch(self) -> None:
        settings = self.services.settings.realtime
        beats = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.outbox.overflowed.wait(), settings.heartbeat_s)
            if self.outbox.overflowed.is_set():
                await self.abort(CLOSE_SLOW, f"The client read none of its last {self.outbox.dropped} events.")
                return
            if time.monotonic() - self.last_heard > settings.heartbeat_s + settings.heartbeat_timeout_s:
                await self.abort(CLOSE_HEARTBEAT, "No pong (nor any message) from the client in time.")
                return
            try:
                await self.reauthenticate()
            except Unauthorized as exc:
                self.outbox.offer(self.error_text(exc, None))
                await self.abort(CLOSE_UNAUTHORIZED, exc.message, flush=True)
                return
            except AppError:
                pass  # the credential store is unavailable for now: checked again at the next beat
            beats += 1
            self.outbox.offer(json.dumps({"type": "ping", "id": f"hb-{beats}"}))

    async def admit_model_call(self, principal: Principal) -> None:
        """The admission of an HTTP request that may call the model (``POST /api/v1/chat/ask``): rate limits
        (requests and tokens per minute) and budgets; the message limit alone would let a socket spend model
        capacity past them."""
        await self.services.rate_limiter.admit(principal)
        await self.services.budgets.check(principal.org_id, principal.user_id, principal.api_key_id)

    async def reauthenticate(self) -> Principal:
        """The credential checked again (a revoked key or an expired token raises ``Unauthorized``)."""
        if self.principal.via != "anonymous":
            self.principal = await principal_for(self.services, self.credential)
            if self.member is not None:
                self.member.principal = self.principal
        return self.principal

    # -- sending and closing -------------------------------------------------------------------------------

    async def send(self, event: dict[str, Any]) -> None:
        """Queue one of the socket's own events (waiting for room in its outbox)."""
        await self.outbox.put(json.dumps(event, ensure_ascii=False))

    def error_text(self, exc: AppError, message_id: str | None, **extra: Any) -> str:
        error: dict[str, Any] = dict(error_body(exc.code, exc.message)["error"])
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            error["retry_after"] = max(1, math.ceil(exc.retry_after))
        return json.dumps({"type": "error", "id": message_id, "error": error, **extra}, ensure_ascii=False)

    async def send_error(self, exc: AppError, message_id: str | None, **extra: Any) -> None:
        await self.outbox.put(self.error_text(exc, message_id, **extra))

    async def close(self, code: int, reason: str) -> NoReturn:
        """Close after the events already queued (the reader's own errors), then stop reading."""
        await self.outbox.put_close(code, close_reason(reason))
        if self._writer is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, *_GONE):
                await asyncio.wait_for(asyncio.shield(self._writer), _ABORT_WAIT_S * 5)
        raise Closed

    async def abort(self, code: int, reason: str, *, flush: bool = False) -> None:
        """Close now, whatever the writer is doing (it may be stuck on a client that does not read);
        ``flush``: give it a moment to send what is queued first."""
        self.services.metrics.ws_closed.labels(_REASONS.get(code, str(code))).inc()
        if self._writer is not None and not self._writer.done():
            if flush:
                with contextlib.suppress(TimeoutError, asyncio.CancelledError, *_GONE):
                    await asyncio.wait_for(self.outbox.drained(), _ABORT_WAIT_S)
            self._writer.cancel()
        with contextlib.suppress(TimeoutError, *_GONE):
            await asyncio.wait_for(self._close_socket(code, close_reason(reason)), _ABORT_WAIT_S)

    async def _send_text(self, text: str) -> None:
        await self.websocket.send_text(text)

    async def _close_socket(self, code: int, reason: str) -> None:
        with contextlib.suppress(*_GONE):
            await self.websocket.close(code, reason)
