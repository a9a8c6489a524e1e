"""``WS /ws``: the realtime channel: chat over the socket, and the organisation's events (messages,
artifacts, jobs, typing, presence, flow prompts) for whoever may read their object (``atrium.realtime``).

* **Auth** is resolved before the socket is accepted, from ``Authorization: Bearer <credential>`` (or
  ``X-API-Key``), else the subprotocol pair ``["atrium.bearer", "<credential>"]`` (browsers cannot set
  headers on a WebSocket), else ``?access_token=``. A refused caller is accepted only to be closed at once
  with ``4000 + the HTTP status`` (4401 unauthorized, 4429 rate limited or too many sockets, 4503
  starting), because a browser cannot read the status of a refused handshake; nothing it sends is read.
* **Envelope**: JSON text messages ``{"type": ..., "id": ...}``; every reply echoes the ``id`` of the
  client message it answers (broadcast events have ``"id": null`` and ``ts``, when they were published).
  Client types: the table ``MESSAGES`` (``chat``, ``ping``, ``pong``, ``typing``, ``presence``,
  ``subscribe``, ``unsubscribe``, ``flow.start``, ``flow.answer``, ``flow.cancel``). A chat's events:
  ``start``, ``token``, ``discard``, ``step`` (with ``steps: true``), ``sources``, ``done`` (the SSE events
  of ``/api/v1/chat/ask``, same payloads, from the same ``AnswerRun``; ``seq`` is the SSE event id, so a
  client that lost the socket resumes at ``GET /api/v1/conversations/{id}/messages/{message_id}/stream``
  with ``Last-Event-ID: <seq>``). Errors: ``error`` (``{"code", "message", "request_id"}`` as over HTTP).
* **Limits**: every message counts against ``rate_limits.ws_messages_per_minute``; a chat also counts as a
  request (requests and tokens per minute, as ``POST /api/v1/chat/ask`` does) and passes the budget check.
  A refusal is an ``error`` event and the socket stays open; so does a malformed or oversize message,
  except one over 16 times ``limits.max_ws_message_bytes``, which closes the socket with 1009. Sockets per
  user and per organisation, and threads followed per socket: ``realtime.*``.
* **One chat at a time** per socket (another one meanwhile is refused as ``busy``). The answer is a
  detached run (``conversations/runs.py``): a socket that closes mid-answer stops the forwarding only.
* The credential is checked again before every chat and at every heartbeat, so a revoked key or an
  expired token ends the socket (an ``unauthorized`` error, then close 4401).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

from fastapi import APIRouter, WebSocket
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.websockets import WebSocketDisconnect, WebSocketDisconnected

from atrium.accounts.principal import Principal
from atrium.agents.threads import get_thread
from atrium.container import Services
from atrium.conversations.browse import get_conversation
from atrium.conversations.ports import RunEvent
from atrium.errors import AppError, InvalidRequest, NotReady, PayloadTooLarge, Unauthorized
from atrium.http.deps import principal_for
from atrium.http.errors import error_body
from atrium.http.realtime_flows import FLOW_MESSAGES, handle_flow_message
from atrium.http.routes.chat import checked_message
from atrium.http.ws_connection import CLOSE_TOO_BIG, Closed, SocketBase, close_reason
from atrium.knowledge.service import check_collection
from atrium.realtime.ports import Audience, Event
from atrium.realtime.presence import presence_of
from atrium.telemetry.logging import request_id_var

log = logging.getLogger(__name__)

router = APIRouter(tags=["realtime"])

ENDPOINT = "/ws"  # what the model calls of a chat over the socket are metered under
PROTOCOL = "atrium.bearer"  # the subprotocol that carries a credential: ["atrium.bearer", "<credential>"]
HARD_CAP_FACTOR = 16  # a message this many times over the limit closes the socket
_ID_MAX = 128
MAX_FLOW_MESSAGES = 4  # flow messages being answered at once on one socket
FLOW_GRACE_S = 30.0  # how long a closing socket lets its flow answers finish (they are stored either way)
_OBJECT_ID = Field(None, min_length=1, max_length=64)
_RUN_EVENTS = {"meta": "start", "token": "token", "sources": "sources", "done": "done"}


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(None, min_length=1, max_length=_ID_MAX)


class ChatIn(_In):
    type: Literal["chat"]
    id: str = Field(min_length=1, max_length=_ID_MAX)
    message: str = Field(min_length=1)
    conversation_id: str | None = _OBJECT_ID
    collection: str | None = Field(None, min_length=1, max_length=100)
    steps: bool = False  # also a ``step`` event per node of the assistant graph


class PingIn(_In):
    type: Literal["ping"]


class PongIn(_In):  # the answer to the server's heartbeat ``ping``
    type: Literal["pong"]


class TypingIn(_In):
    """Typing in a conversation (to the owner's other sockets) or an agent thread (to its subscribers
    who may read it); exactly one of the two."""

    type: Literal["typing"]
    conversation_id: str | None = _OBJECT_ID
    thread_id: str | None = _OBJECT_ID
    state: Literal["start", "stop"] = "start"


class PresenceIn(_In):  # who of the organisation is online
    type: Literal["presence"]


class SubscribeIn(_In):  # follow an agent thread's events (its typing)
    type: Literal["subscribe", "unsubscribe"]
    thread_id: str = Field(min_length=1, max_length=64)


# The client message types and their models; ``RealtimeSocket.handlers`` maps the same names to handlers.
MESSAGES: dict[str, type[BaseModel]] = {
    "chat": ChatIn,
    "ping": PingIn,
    "pong": PongIn,
    "typing": TypingIn,
    "presence": PresenceIn,
    "subscribe": SubscribeIn,
    "unsubscribe": SubscribeIn,
    **FLOW_MESSAGES,  # flow.start, flow.answer, flow.cancel: atrium.http.realtime_flows
}
_FIELDS = frozenset(name for model in MESSAGES.values() for name in model.model_fields)


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
        presence_id, name = await presence_of(services.db, principal)
        socket = RealtimeSocket(websocket, services, principal, credential)
        # ``ready`` is queued before the socket joins the hub: broadcasts reach its outbox from then on and
        # must be written after it.
        socket.outbox.offer(json.dumps({
            "type": "ready", "id": None, "request_id": request_id_var.get(), "limits": {
                "max_message_bytes": socket.limit, "max_message_chars": services.settings.limits.max_message_chars,
                "max_subscriptions": services.settings.realtime.max_subscriptions,
                "heartbeat_s": services.settings.realtime.heartbeat_s}, "you": {"id": presence_id, "name": name}},
            ensure_ascii=False))
        socket.member = services.realtime.join(principal, presence_id, name, socket.outbox)  # TooManySockets
    except AppError as exc:
        await _refuse(websocket, subprotocol, exc)
        return
    try:
        await websocket.accept(subprotocol=subprotocol)
    except BaseException:
        services.realtime.leave(socket.member)
        raise
    await socket.serve()


async def _refuse(websocket: WebSocket, subprotocol: str | None, exc: AppError) -> None:
    with contextlib.suppress(WebSocketDisconnect, WebSocketDisconnected, OSError):
        await websocket.accept(subprotocol=subprotocol)
        await websocket.close(4000 + exc.status_code, close_reason(exc.message))


class RealtimeSocket(SocketBase):
    """One accepted socket: reads messages, answers them (``handlers``), forwards the current chat's events."""

    def __init__(self, websocket: WebSocket, services: Services, principal: Principal, credential: str) -> None:
        super().__init__(websocket, services, principal, credential)
        self.limit = services.settings.limits.max_ws_message_bytes
        self._chat: asyncio.Task[None] | None = None
        self._flows: set[asyncio.Task[None]] = set()
        self.handlers: dict[str, Callable[[Any], Awaitable[None]]] = {
            "chat": self.start_chat,
            "ping": self.pong,
            "pong": self.heard,
            "typing": self.typing,
            "presence": self.presence,
            "subscribe": self.subscribe,
            "unsubscribe": self.unsubscribe,
            **dict.fromkeys(FLOW_MESSAGES, self.flow),
        }

    async def on_end(self) -> None:
        # Stops the forwarding only: the answer run is detached and stores the answer itself.
        if self._chat is not None and not self._chat.done():
            self._chat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._chat
        if self._flows:  # an answer being handled finishes (the flow's state is stored), unheard
            await asyncio.wait(set(self._flows), timeout=FLOW_GRACE_S)

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
        try:
            kind, incoming = _parse(raw)
        except InvalidRequest as exc:
            await self.send_error(exc, message_id)
            return
        try:
            await self.handlers[kind](incoming)
        except AppError as exc:  # not_found for an object the caller may not read...
            await self.send_error(exc, message_id)

    # -- handlers (one per client message type) --------------------------------------------------------------

    async def pong(self, request: PingIn) -> None:
        await self.send({"type": "pong", "id": request.id})

    async def heard(self, request: PongIn) -> None:
        """The heartbeat's answer: hearing it (``last_heard``) is all it does."""

    async def presence(self, request: PresenceIn) -> None:
        await self.send({"type": "presence", "id": request.id, "event": "list",
                         "users": self.services.realtime.online(self.principal.org_id)})

    async def typing(self, request: TypingIn) -> None:
        if (request.conversation_id is None) == (request.thread_id is None):
            raise InvalidRequest("Send exactly one of conversation_id and thread_id.")
        assert self.member is not None
        about: dict[str, Any]
        topic = None
        if request.conversation_id is not None:  # private to its owner: the owner's other sockets
            row: Any = await get_conversation(self.services.db, self.principal, request.conversation_id)
            about = {"conversation_id": row.id}
        else:
            row = await get_thread(self.services.db, self.principal, str(request.thread_id))
            about, topic = {"thread_id": row.id}, f"thread:{row.id}"
        await self.services.events.publish(Event(
            self.principal.org_id, "typing",
            {**about, "state": request.state, "user": {"id": self.member.presence_id, "name": self.member.name}},
            Audience.of(row), topic=topic, skip=self.member.socket_id))

    async def subscribe(self, request: SubscribeIn) -> None:
        assert self.member is not None
        topic = f"thread:{request.thread_id}"
        if request.type == "subscribe" and topic not in self.member.topics:
            limit = self.services.settings.realtime.max_subscriptions
            if len(self.member.topics) >= limit:
                raise InvalidRequest(f"A socket follows at most {limit} threads; unsubscribe from one first.",
                                     code="too_many_subscriptions")
            await get_thread(self.services.db, self.principal, request.thread_id)  # NotFound unless readable
            self.member.topics.add(topic)
        elif request.type == "unsubscribe":
            self.member.topics.discard(topic)
        await self.send({"type": f"{request.type}d", "id": request.id, "thread_id": request.thread_id})

    async def unsubscribe(self, request: SubscribeIn) -> None:
        await self.subscribe(request)

    async def flow(self, request: BaseModel) -> None:
        """``flow.start``, ``flow.answer``, ``flow.cancel`` (``http/realtime_flows.py``), answered beside the
        reader: a step may call the model, and meanwhile the socket keeps reading (pongs, typing, a chat)."""
        if len(self._flows) >= MAX_FLOW_MESSAGES:
            raise AppError(f"At most {MAX_FLOW_MESSAGES} flow messages are answered at once on a socket; wait for "
                           "an answer.", code="busy")
        task = asyncio.create_task(self._flow(request))
        self._flows.add(task)
        task.add_done_callback(self._flows.discard)

    async def _flow(self, request: Any) -> None:
        with contextlib.suppress(Closed):  # the credential was revoked: the socket is closing
            await handle_flow_message(self, request)

    # -- chat --------------------------------------------------------------------------------------------------

    async def start_chat(self, request: ChatIn) -> None:
        if self._chat is not None and not self._chat.done():
            await self.send_error(AppError("A chat is already running on this socket; wait for its done or "
                                           "error event, or open another socket.", code="busy"), request.id)
            return
        try:
            principal = await self.reauthenticate()
            message = checked_message(request.message, self.services.settings.limits.max_message_chars)
            collections = [check_collection(request.collection)] if request.collection else None
            await self.admit_model_call(principal)
        except Unauthorized as exc:
            await self.send_error(exc, request.id)
            await self.close(4401, exc.message)
        except AppError as exc:
            await self.send_error(exc, request.id)
            return
        self._chat = asyncio.create_task(self._answer(request, principal, message, collections))

    async def _answer(self, request: ChatIn, principal: Principal, message: str,
                      collections: list[str] | None) -> None:
        try:
            # Shielded: once the question is received it is stored and answered, even if the socket
            # closes while it is being stored.
            run = await asyncio.shield(self.services.chat.ask(
                principal, message, conversation_id=request.conversation_id, collections=collections,
                endpoint=ENDPOINT, steps=request.steps,
                socket_id=self.member.socket_id if self.member is not None else None))
        except AppError as exc:  # not_found for a conversation not of this tenant, refused by a guard...
            await self.send_error(exc, request.id)
            return
        except Exception:
            log.exception("chat over the WebSocket failed to start")
            await self.send_error(AppError("Internal error."), request.id)
            return
        async for item in run.events():  # the socket's own events: waits for room in its outbox
            await self.send(_event(item, request.id))


def _id_of(raw: object) -> str | None:
    """The client's id, if the message has a usable one (so that even its errors can be matched)."""
    value = raw.get("id") if isinstance(raw, dict) else None
    return value if isinstance(value, str) and 0 < len(value) <= _ID_MAX else None


def _parse(raw: object) -> tuple[str, BaseModel]:
    if not isinstance(raw, dict):
        raise InvalidRequest("A message is a JSON object with a 'type'.")
    kind = raw.get("type")
    model = MESSAGES.get(kind) if isinstance(kind, str) else None
    if model is None or not isinstance(kind, str):
        raise InvalidRequest(f"Unknown message type; expected one of: {', '.join(MESSAGES)}.")
    try:
        return kind, model.model_validate(raw)
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
