"""``POST /api/v1/chat/ask``: a grounded answer as JSON, or as SSE (``meta``, ``token``, ``sources``,
``done`` | ``error``; ``discard`` when validation withdraws a draft, ``step`` per graph node with ``steps``)
when ``stream`` is true or the client accepts ``text/event-stream``. The answer is one turn of the assistant
graph (``agents/chat_turns.py``). Every event has an
``id``: a client that lost the stream resumes after it at
``GET /api/v1/conversations/{conversation_id}/messages/{message_id}/stream`` (``Last-Event-ID``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse

from atrium.conversations.runs import AnswerRun
from atrium.errors import (
    AppError,
    BudgetExceeded,
    ContentBlocked,
    InvalidRequest,
    ModelTimeout,
    PayloadTooLarge,
    error_class,
)
from atrium.http.deps import ChatDep, LimitedPrincipalDep, LimitsDep
from atrium.http.errors import error_body
from atrium.http.schemas.chat import AskErrorResponse, AskResponse
from atrium.http.schemas.errors import AUTHENTICATED, LIMITED, error_responses
from atrium.http.sse import sse_frames
from atrium.knowledge.service import check_collection

# 404: no such conversation or collection (or none the caller may read).
router = APIRouter(prefix="/api/v1/chat", tags=["chat"],
                   responses={**AUTHENTICATED, **LIMITED, **error_responses(404)})
# A failed answer run keeps its error's status when it was refused (a guard, a budget) or timed out; any
# other failure is the upstream's (502).
_OWN_STATUS = (ContentBlocked, BudgetExceeded, ModelTimeout)


def run_error_status(code: str) -> int:
    kind = error_class(code)
    return kind.status_code if issubclass(kind, _OWN_STATUS) else 502


class AskBody(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"message": "When are refunds issued?"}]})
    message: str = Field(min_length=1)
    conversation_id: str | None = Field(None, min_length=1, max_length=64)
    collection: str | None = Field(None, min_length=1, max_length=100)
    stream: bool = False
    steps: bool = Field(False, description="Also stream a `step` event (`node`, `status`, `ms`) per node of the "
                                           "assistant graph.")


def checked_message(message: str, limit: int) -> str:
    if len(message) > limit:
        raise PayloadTooLarge(f"message is {len(message)} characters; the limit is {limit}.")
    if not message.strip():
        raise InvalidRequest("message must not be blank.")
    return message


# Documented, not validated: the answer is built by hand (this is the hot path).
_ASK_RESPONSES = {
    200: {"model": AskResponse, "description": "The answer; with `stream: true` or `Accept: text/event-stream`, "
          "Server-Sent Events `meta`, `token`..., `sources`, then `done` or `error`, each with an `id` (resume "
          "after it at `GET /api/v1/conversations/{conversation_id}/messages/{message_id}/stream`). A `discard` "
          "event means validation withdrew the text streamed so far (clear it; the replacement follows); with "
          "`steps: true`, a `step` event (`node`, `status`, `ms`) ends each node of the assistant graph.",
          "content": {"text/event-stream": {"schema": {"type": "string"}}}},
    **error_responses(400, 502, 503, 504, model=AskErrorResponse),
}


@router.post("/ask", response_model=None, responses=_ASK_RESPONSES)
async def ask(body: AskBody, request: Request, principal: LimitedPrincipalDep,
              chat: ChatDep, limits: LimitsDep) -> JSONResponse | EventSourceResponse:
    message = checked_message(body.message, limits.max_message_chars)
    collections = [check_collection(body.collection)] if body.collection else None
    run = await chat.ask(principal, message, conversation_id=body.conversation_id,
                         collections=collections, steps=body.steps)
    wants_sse = body.stream or "text/event-stream" in request.headers.get("accept", "")
    if wants_sse:
        # If the client goes away the frames stop; the run does not, and stores the answer.
        return EventSourceResponse(sse_frames(run.events()), ping=15)
    return await _collect(run)


async def _collect(run: AnswerRun) -> JSONResponse:
    meta: dict[str, Any] = {}
    sources: list[dict[str, Any]] = []
    parts: list[str] = []
    async for item in run.events():
        if item.event == "meta":
            meta = item.data
        elif item.event == "token":
            parts.append(item.data["text"])
        elif item.event == "discard":  # validation withdrew the draft streamed so far
            parts.clear()
        elif item.event == "sources":
            sources = item.data["sources"]
        elif item.event == "error":
            status = run_error_status(item.data.get("code", ""))
            return JSONResponse({**error_body(item.data["code"], item.data["message"]),
                                 "conversation_id": meta.get("conversation_id"),
                                 "message_id": meta.get("message_id"), "partial_answer": "".join(parts)},
                                status_code=status)
        elif item.event == "done":
            return JSONResponse({
                "answer": item.data["answer"], "sources": sources, "artifacts": item.data.get("artifacts", []),
                "conversation_id": item.data["conversation_id"], "message_id": item.data["message_id"],
                "user_message_id": meta.get("user_message_id"), "model": item.data["model"],
                "usage": item.data["usage"],
            })
    raise AppError("The answer ended without a final event.")
