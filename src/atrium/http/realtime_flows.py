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
request (rate limits, budgets). The socket answers a flow message beside its reader (``routes/ws.py``:
up to 4 at once), so a step that calls the model does not hold up its pongs, typing or a chat.
"""

from __future__ import annotations

from typing import Any, Literal, NoReturn, Protocol

from pydantic import BaseModel, ConfigDict, Field

from atrium.accounts.principal import Principal
from atrium.agents.flows.service import FlowView
from atrium.container import Services
from atrium.errors import AppError, NotReady, Unauthorized
from atrium.http.schemas.flows import Answer, FlowStateView

_ID_MAX = 128


class FlowSocket(Protocol):
    """What a socket connection gives this module (``routes/ws.py``'s ``Connection``)."""

    services: Services

    async def reauthenticate(self) -> Principal: ...
    async def admit_model_call(self, principal: Principal) -> None: ...
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


# The client message types this module answers (``routes/ws.py`` puts them in its ``MESSAGES``).
FLOW_MESSAGES: dict[str, type[BaseModel]] = {"flow.start": FlowStartIn, "flow.answer": FlowAnswerIn,
                                             "flow.cancel": FlowCancelIn}


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


async def handle_flow_message(socket: FlowSocket, message: FlowStartIn | FlowAnswerIn | FlowCancelIn) -> None:
    """Answer one ``flow.*`` message on ``socket`` (module doc). The credential is checked again first
    (``Unauthorized`` closes the socket with 4401)."""
    try:
        principal = await socket.reauthenticate()
        flows = socket.services.agents.flows
        if flows is None:
            raise NotReady("Guided flows are not configured.")
        if isinstance(message, FlowStartIn):
            await socket.admit_model_call(principal)
            view = await flows.start(principal, message.flow)
        elif isinstance(message, FlowAnswerIn):
            await socket.admit_model_call(principal)
            view = await flows.answer(principal, message.flow_id, message.answer)
        else:
            view = await flows.cancel(principal, message.flow_id)
    except Unauthorized as exc:
        await socket.send_error(exc, message.id)
        await socket.close(4401, exc.message)
    except AppError as exc:
        await socket.send_error(exc, message.id)
        return
    await socket.send(flow_event(view, message.id))

