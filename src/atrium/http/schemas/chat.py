"""``POST /api/v1/chat/ask`` and the one-shot query records (``/api/v1/query``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from atrium.http.schemas.common import Passage, Timestamp, TokenUsage, View
from atrium.http.schemas.errors import ErrorResponse

if TYPE_CHECKING:
    from atrium.store.models import QueryRecord as QueryRow


class Source(Passage):
    """A numbered source the answer was grounded on; ``cited`` when the answer relies on it."""

    number: int = Field(description="The source's number, as the answer cites it (`[1]`).")
    snippet: str = Field(description="A short window of the passage (at most 300 characters) around its best "
                                     "match with the question; its start when nothing matches.")
    score: float = Field(description="The retrieval score the source was chosen with.")
    cited: bool = False
    cited_by: Literal["model", "overlap"] | None = Field(
        None, description="`model`: the answer names the source; `overlap`: the answer names none and most of "
                          "its words are found in this source; null when not cited.")


class AskResponse(View):
    answer: str
    sources: list[Source]
    artifacts: list[dict[str, Any]] = Field(description="The artifacts the turn made (`id`, `kind`, `title`, "
                                                       "`description`): one when the message asked for one.")
    conversation_id: str
    message_id: str
    user_message_id: str | None
    model: str | None = Field(description="The model that answered; null when no source was relevant enough "
                                          "and no model was called.")
    usage: TokenUsage


class AnswerStreamEvent(View):
    """One Server-Sent Event of an answer's stream, as its frame's fields (`id:`, `event:`, `data:`)."""

    id: int = Field(description="Its place in the answer's stream, from 1; send the last one received as "
                                "`Last-Event-ID` to resume.")
    event: Literal["meta", "token", "sources", "done", "error"]
    data: dict[str, Any] = Field(description="JSON: `meta` {conversation_id, user_message_id, message_id}; "
                                             "`token` {text}; `sources` {sources}; `done` {message_id, "
                                             "conversation_id, model, usage, answer}; `error` {code, message, "
                                             "message_id, conversation_id}.")


class AskErrorResponse(ErrorResponse):
    """A failed answer (the model timed out or failed, a guard blocked it, a budget ran out): the error, with
    the conversation and the text generated before the failure."""

    conversation_id: str | None = None
    message_id: str | None = None
    partial_answer: str = ""


class QueryRecord(View):
    id: str
    status: Literal["pending", "complete", "error"]
    question: str
    answer: str | None
    sources: list[dict[str, Any]]
    model: str | None
    usage: dict[str, Any] | None
    error: dict[str, Any] | None
    created_at: Timestamp
    completed_at: Timestamp | None
    query_id: str = Field(description="The same as `id`, for the first front ends.")
    response: str | None = Field(description="The same as `answer`, for the first front ends.")

    @classmethod
    def of(cls, record: QueryRow) -> QueryRecord:
        return cls(id=record.id, status=record.status, question=record.question, answer=record.answer,
                   sources=record.sources or [], model=record.model, usage=record.usage, error=record.error,
                   created_at=record.created_at.isoformat(),
                   completed_at=record.completed_at.isoformat() if record.completed_at else None,
                   query_id=record.id, response=record.answer)
