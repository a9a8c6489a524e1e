"""``WS /ws``: the realtime channel. For now it carries chat; typing, artifact progress, presence and
replay are later message types of the same envelope.

* **Auth** is resolved before the socket is accepted, from ``Authorization: Bearer <credential>`` (or
  ``X-API-Key``), else the subprotocol pair ``["atrium.bearer", "<credential>"]`` (browsers cannot set
  headers on a WebSocket), else ``?access_token=``. A refused caller is accepted only to be closed at once
  with ``4000 + the HTTP status`` (4401 unauthorized, 4429 rate limited, 4503 starting), because a browser
  cannot read the status of a refused handshake; nothing it sends is ever read.
* **Envelope**: JSON text messages ``{"type": ..., "id": ...}``; every server event echoes the ``id`` of
  the client message it answers. Client types: ``chat``, ``ping``. Server types: ``ready`` (once, after
  auth), ``start``, ``token``, ``sources``, ``done`` (the SSE events of ``/api/v1/chat/ask``, same payloads,
  from the same ``AnswerRun``; ``seq`` is the SSE event id, so a client that lost the socket resumes the
  answer at ``GET /api/v1/conversations/{id}/messages/{message_id}/stream`` with ``Last-Event-ID: <seq>``),
  ``error`` (``{"code", "message", "request_id"}`` as over HTTP) and ``pong``.
* **Limits**: every message counts against ``rate_limits.ws_messages_per_minute``; a chat also counts as a
  request (requests and tokens per minute, as ``POST /api/v1/chat/ask`` does) and passes the budget check.
  A refusal is an ``error`` event and the socket stays open; so does a malformed or oversize message,
  except one over 16 times ``limits.max_ws_message_bytes``, which closes the socket with 1009.
* **One chat at a time** per socket (another one meanwhile is refused as ``busy``): a client wanting
  parallel answers opens more sockets. The answer is a detached run (``conversations/runs.py``): a socket
  that closes mid-answer stops the forwarding only, and the answer is still stored whole.
* The credential is checked again before every chat, so a revoked key or an expired token ends the
  socket (an ``unauthorized`` error, then close 4401) instead of keeping it alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections.abc import Sequence
from typing import Any, Literal, NoReturn

from fastapi import APIRouter, WebSocket
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketDisconnected

from atrium.accounts.principal import Principal
from atrium.container import Services
from atrium.conversations.runs import RunEvent
from atrium.errors import AppError, InvalidRequest, NotReady, PayloadTooLarge, RateLimited, Unauthorized
from atrium.http.deps import principal_for
from atrium.http.errors import error_body
from atrium.http.realtime_flows import handle_flow_message, is_flow_message
from atrium.http.routes.chat import checked_message
from atrium.knowledge.service import check_collection
from atrium.telemetry.logging import redact, request_id_var

log = logging.getLogger(__name__)

router = APIRouter(tags=["realtime"])

ENDPOINT = "/ws"  # what the model calls of a chat over the socket are metered under
PROTOCOL = "atrium.bearer"  # the subprotocol that carries a credential: ["atrium.bearer", "<credential>"]
HARD_CAP_FACTOR = 16  # a message this many times over the limit closes the socket
CLOSE_TOO_BIG = 1009
_ID_MAX = 128
_RUN_EVENTS = {"meta": "start", "token": "token", "sources": "sources", "done": "done"}


class ChatIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["chat"]
    id: str = Field(min_length=1, max_length=_ID_MAX)
    message: str = Field(min_length=1)
    conversation_id: str | None = Field(None, min_length=1, max_length=64)
    collection: str | None = Field(None, min_length=1, max_length=100)


class PingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["ping"]
    id: str | None = Field(None, min_length=1, max_length=_ID_MAX)


_MESSAGES: dict[str, type[BaseModel]] = {"chat": ChatIn, "ping": PingIn}
_FIELDS = frozenset(name for model in _MESSAGES.values() for name in model.model_fields)


class _Closed(Exception):
    """The server closed the socket (the reason was already sent): stop serving it."""


def credential_of(websocket: WebSocket) -> str:
    """The credential the handshake carries (header, then subprotocol, then query), or ``""``."""
    scheme, _, value = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if key := websocket.headers.get("x-api-key", "").strip():
        return key
    offered: Sequence[str] = websocket.scope.get("subprotocols") or ()
    if PROTOCOL in offered:
        at = list(offered).index(PROTOCOL)
        return offered[at + 1].strip() if at + 1 < len(offered) else ""
    return websocket.query_params.get("access_token", "").strip()


@router.websocket("/ws")
async def realtime(websocket: WebSocket) -> None:
    # Never the credential as the chosen subprotocol: a browser needs one it offered, and this one is fixed.
    subprotocol = PROTOCOL if PROTOCOL in (websocket.scope.get("subprotocols") or ()) else None
    services: Services | None = getattr(websocket.app.state, "services", None)
    try:
        if services is None:
            raise NotReady("Atrium is starting.")
        credential = credential_of(websocket)
        principal = await principal_for(services, credential)
        await services.rate_limiter.admit(principal)  # opening a socket is a request
    except AppError as exc:
        await _refuse(websocket, subprotocol, exc)
        return
    await websocket.accept(subprotocol=subprotocol)
    await Connection(websocket, services, principal, credential).serve()


async def _refuse(websocket: WebSocket, subprotocol: str | None, exc: AppError) -> None:
    with contextlib.suppress(WebSocketDisconnect, WebSocketDisconnected, OSError):
        await websocket.accept(subprotocol=subprotocol)
        await websocket.close(4000 + exc.status_code, _reason(exc.message))


def _reason(message: str) -> str:
    """A close reason: at most 123 bytes of UTF-8 (the protocol's limit), never a secret."""
    return redact(message).encode()[:123].decode(errors="ignore")


class Connection:
    """One accepted socket: reads messages, answers them, forwards the current chat's events."""

    def __init__(self, websocket: WebSocket, services: Services, principal: Principal, credential: str) -> None:
        self.websocket = websocket
        self.services = services
        self.principal = principal
        self.credential = credential
        self.limit = services.settings.limits.max_ws_message_bytes
        self._send_lock = asyncio.Lock()  # the reader and the chat forwarder both send
        self._chat: asyncio.Task[None] | None = None

    async def serve(self) -> None:
        try:
            await self.send({"type": "ready", "id": None, "request_id": request_id_var.get(), "limits": {
                "max_message_bytes": self.limit,
                "max_message_chars": self.services.settings.limits.max_message_chars}})
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                try:
                    await self.handle(message.get("text"), message.get("bytes"))
                except (_Closed, WebSocketDisconnect, WebSocketDisconnected):
                    raise
                except Exception:  # e.g. the database failing a check: this message fails, not the socket
                    log.exception("WebSocket message failed")
                    await self.send_error(AppError("Internal error."), None)
        except (_Closed, WebSocketDisconnect, WebSocketDisconnected):
            return
        finally:
            # Stops the forwarding only: the answer run is detached and stores the answer itself.
            if self._chat is not None and not self._chat.done():
                self._chat.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._chat

    async def send(self, event: dict[str, Any]) -> None:
        async with self._send_lock:
            await self.websocket.send_text(json.dumps(event, ensure_ascii=False))

    async def send_error(self, exc: AppError, message_id: str | None, **extra: Any) -> None:
        error: dict[str, Any] = dict(error_body(exc.code, exc.message)["error"])
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            error["retry_after"] = max(1, math.ceil(exc.retry_after))
        await self.send({"type": "error", "id": message_id, "error": error, **extra})

    async def close(self, code: int, reason: str) -> NoReturn:
        with contextlib.suppress(WebSocketDisconnect, WebSocketDisconnected, OSError):
            async with self._send_lock:
                await self.websocket.close(code, _reason(reason))
        raise _Closed

    async def handle(self, text: str | None, data: bytes | None) -> None:
        size = len(text.encode()) if text is not None else len(data or b"")
        if size > self.limit * HARD_CAP_FACTOR:
            await self.close(CLOSE_TOO_BIG, f"Message exceeds {self.limit * HARD_CAP_FACTOR} bytes.")
        try:
            await self.services.rate_limiter.admit_message(self.principal)
        except AppError as exc:  # RateLimited; NotReady when the limiter's storage is down and fail-closed
            await self.send_error(exc, None)
            return
        if text is None:
            await self.send_error(InvalidRequest("Only JSON text messages are accepted."), None)
            return
        if size > self.limit:
            await self.send_error(PayloadTooLarge(f"Message is {size} bytes; the limit is {self.limit}."), None)
            return
        try:
            raw = json.loads(text)
        except ValueError:
            await self.send_error(InvalidRequest("The message is not valid JSON."), None)
            return
        message_id = _id_of(raw)
        if is_flow_message(raw):  # flow.start / flow.answer / flow.cancel: atrium.http.realtime_flows
            await handle_flow_message(self, raw, message_id, self._reauthenticate)
            return
        try:
            incoming = _parse(raw)
        except InvalidRequest as exc:
            await self.send_error(exc, message_id)
            return
        if isinstance(incoming, PingIn):
            await self.send({"type": "pong", "id": incoming.id})
        elif isinstance(incoming, ChatIn):
            await self.start_chat(incoming)

    async def start_chat(self, request: ChatIn) -> None:
        if self._chat is not None and not self._chat.done():
            await self.send_error(AppError("A chat is already running on this socket; wait for its done or "
                                           "error event, or open another socket.", code="busy"), request.id)
            return
        try:
            principal = await self._reauthenticate()
            message = checked_message(request.message, self.services.settings.limits.max_message_chars)
            collections = [check_collection(request.collection)] if request.collection else None
            # The same admission as POST /api/v1/chat/ask: the message limit alone would let a socket
            # spend model capacity past the request and token windows.
            await self.services.rate_limiter.admit(principal)
            await self.services.budgets.check(principal.org_id, principal.user_id, principal.api_key_id)
        except Unauthorized as exc:
            await self.send_error(exc, request.id)
            await self.close(4401, exc.message)
        except AppError as exc:
            await self.send_error(exc, request.id)
            return
        self._chat = asyncio.create_task(self._answer(request, principal, message, collections))

    async def _reauthenticate(self) -> Principal:
        if self.principal.via == "anonymous":
            return self.principal
        self.principal = await principal_for(self.services, self.credential)
        return self.principal

    async def _answer(self, request: ChatIn, principal: Principal, message: str,
                      collections: list[str] | None) -> None:
        try:
            # Shielded: once the question is received it is stored and answered, even if the socket
            # closes while it is being stored.
            run = await asyncio.shield(self.services.chat.ask(
                principal, message, conversation_id=request.conversation_id, collections=collections,
                endpoint=ENDPOINT))
        except AppError as exc:  # not_found for a conversation not of this tenant, refused by a guard...
            await self._quietly(self.send_error(exc, request.id))
            return
        except Exception:
            log.exception("chat over the WebSocket failed to start")
            await self._quietly(self.send_error(AppError("Internal error."), request.id))
            return
        async for item in run.events():
            if not await self._quietly(self.send(_event(item, request.id))):
                return  # the client left; the run goes on and stores the answer

    async def _quietly(self, sending: Any) -> bool:
        try:
            await sending
        except (WebSocketDisconnect, WebSocketDisconnected, OSError):
            return False
        return True


def _id_of(raw: object) -> str | None:
    """The client's id, if the message has a usable one (so that even its errors can be matched)."""
    value = raw.get("id") if isinstance(raw, dict) else None
    return value if isinstance(value, str) and 0 < len(value) <= _ID_MAX else None


def _parse(raw: object) -> BaseModel:
    if not isinstance(raw, dict):
        raise InvalidRequest("A message is a JSON object with a 'type'.")
    kind = raw.get("type")
    model = _MESSAGES.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise InvalidRequest(f"Unknown message type; expected one of: {', '.join(_MESSAGES)}.")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        # Where and what, never pydantic's echo of the input; a key the client chose is shown only when it
        # is one of the envelope's own fields.
        problems = []
        for item in exc.errors()[:5]:
            where = ".".join(str(part) if isinstance(part, int) or part in _FIELDS else "(field)"
                             for part in item.get("loc", ()))
            problems.append(f"{where or 'message'}: {item.get('msg', 'invalid')}")
        raise InvalidRequest("; ".join(problems)) from None


def _event(item: RunEvent, message_id: str) -> dict[str, Any]:
    """An answer run's event as a socket event: the SSE payload with a ``type`` and the client's ``id``;
    an error is shaped like every other error event."""
    if item.event == "error":
        data = dict(item.data)
        body = error_body(str(data.pop("code", "internal_error")), str(data.pop("message", "The answer failed.")))
        return {"type": "error", "id": message_id, "seq": item.seq, **body, **data}
    return {"type": _RUN_EVENTS.get(item.event, item.event), "id": message_id, "seq": item.seq, **item.data}
