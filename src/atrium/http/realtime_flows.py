"""Guided flows over ``WS /ws``: the ``flow.*`` client messages, answered with ``flow.*`` events.

Client messages (``id``: the client's, echoed by every event that answers it):

* ``{"type": "flow.start", "id", "flow": "project"}``
* ``{"type": "flow.answer", "id", "flow_id", "answer": ...}`` (the same answers as REST)
* ``{"type": "flow.cancel", "id", "flow_id"}``

Server events: ``flow.prompt`` (``flow_id``, ``flow``, ``prompt``, ``values``: the flow waits; ``prompt.error``
says why the previous answer was refused), ``flow.done`` (``status`` ``done``, ``declined`` or ``failed``,
``result``, ``error``), ``flow.cancelled``, and ``error`` (``{"code", "message", "request_id"}``, as over
HTTP: ``not_found`` for a flow that is not the caller's, ``conflict`` for one that ended...).

The same use cases as ``/api/v1/flows`` (``FlowService``), the same rules: the credential is checked again
before each message; ``flow.start`` and ``flow.answer`` may call the model, so they are admitted like a
request (rate limits, budgets). A message is handled before the socket's next one is read (a flow step
is short: a validation, at most one model call for suggestions).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Literal, NoReturn, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from atrium.accounts.principal import Principal
from atrium.agents.flows.service import FlowView
from atrium.container import Services
from atrium.errors import AppError, InvalidRequest, NotReady, Unauthorized
from atrium.http.schemas.flows import Answer, FlowStateView

FLOW_TYPES = ("flow.start", "flow.answer", "flow.cancel")
_ID_MAX = 128


class FlowSocket(Protocol):
    """What a socket connection gives this module (``routes/ws.py``'s ``Connection``)."""

    services: Services

    async def send(self, event: dict[str, Any]) -> None: ...
    async def send_error(self, exc: AppError, message_id: str | None, **extra: Any) -> None: ...
    async def close(self, code: int, reason: str) -> NoReturn: ...


class _FlowMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=_ID_MAX)


class FlowStartIn(_FlowMessage):
    type: Literal["flow.start"]
    flow: str = Field(min_length=1, max_length=40, pattern=r"^[a-z][a-z0-9_-]*$")


class FlowAnswerIn(_FlowMessage):
    type: Literal["flow.answer"]
    flow_id: str = Field(min_length=1, max_length=64)
    answer: Answer = None


class FlowCancelIn(_FlowMessage):
    type: Literal["flow.cancel"]
    flow_id: str = Field(min_length=1, max_length=64)


_MODELS: dict[str, type[_FlowMessage]] = {"flow.start": FlowStartIn, "flow.answer": FlowAnswerIn,
                                          "flow.cancel": FlowCancelIn}


def is_flow_message(raw: object) -> bool:
    return isinstance(raw, dict) and raw.get("type") in FLOW_TYPES


def flow_event(view: FlowView, message_id: str) -> dict[str, Any]:
    """A flow's state as the socket event that tells it."""
    state = FlowStateView.of(view).model_dump(mode="json")
    if view.status == "waiting":
        return {"type": "flow.prompt", "id": message_id, "flow_id": view.id, "flow": view.flow,
                "prompt": state["prompt"], "values": state["values"]}
    if view.status == "cancelled":
        return {"type": "flow.cancelled", "id": message_id, "flow_id": view.id, "flow": view.flow}
    return {"type": "flow.done", "id": message_id, "flow_id": view.id, "flow": view.flow, "status": view.status,
            "result": state["result"], "error": state["error"], "values": state["values"]}


def _parsed(raw: dict[str, Any]) -> _FlowMessage:
    try:
        return _MODELS[str(raw["type"])].model_validate(raw)
    except ValidationError as exc:  # where and what, never the input echoed (it may be a password)
        fields = set(FlowAnswerIn.model_fields) | set(FlowStartIn.model_fields)
        problems = [".".join(str(part) if isinstance(part, int) or part in fields else "(field)"
                             for part in item.get("loc", ())) + f": {item.get('msg', 'invalid')}"
                    for item in exc.errors()[:5]]
        raise InvalidRequest("; ".join(problems)) from None


async def handle_flow_message(socket: FlowSocket, raw: dict[str, Any], message_id: str | None,
                              current_principal: Callable[[], Awaitable[Principal]]) -> None:
    """Answer one ``flow.*`` message on ``socket`` (module doc). ``current_principal`` re-checks the
    socket's credential (``Unauthorized`` closes the socket with 4401)."""
    try:
        message = _parsed(raw)
        principal = await current_principal()
        flows = socket.services.agents.flows
        if flows is None:
            raise NotReady("Guided flows are not configured.")
        if isinstance(message, FlowStartIn):
            await _admit(socket.services, principal)
            view = await flows.start(principal, message.flow)
        elif isinstance(message, FlowAnswerIn):
            await _admit(socket.services, principal)
            view = await flows.answer(principal, message.flow_id, message.answer)
        else:
            assert isinstance(message, FlowCancelIn)
            view = await flows.cancel(principal, message.flow_id)
    except Unauthorized as exc:
        await socket.send_error(exc, message_id)
        await socket.close(4401, exc.message)
    except AppError as exc:
        await socket.send_error(exc, message_id)
        return
    await socket.send(flow_event(view, message.id))


async def _admit(services: Services, principal: Principal) -> None:
    """As a request that may call the model: rate limits (requests and tokens per minute) and budgets."""
    await services.rate_limiter.admit(principal)
    await services.budgets.check(principal.org_id, principal.user_id, principal.api_key_id)
