"""The caller's own conversations and their messages; and, for admins, every conversation they administer
(metadata only) with an audited erase. Another user's conversation is ``404`` here, for every role.

``GET /{conversation_id}/messages/{message_id}/stream`` resumes an answer's Server-Sent Events after the
last event id the client saw (``Last-Event-ID``, or ``?last_event_id=``), see ``conversations/replay.py``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette import EventSourceResponse

from atrium.conversations import browse
from atrium.errors import InvalidRequest
from atrium.http.deps import (
    ClientIp,
    CountedPrincipalDep,
    DatabaseDep,
    ErasureDep,
    Offset,
    PrincipalDep,
    ResourceId,
    StreamsDep,
    require_role,
)
from atrium.http.schemas.chat import AnswerStreamEvent
from atrium.http.schemas.conversations import (
    AdminConversationList,
    AdminConversationView,
    ConversationList,
    ConversationView,
    MessageList,
    MessageView,
)
from atrium.http.schemas.errors import AUTHENTICATED, BODY, COUNTED, error_responses
from atrium.http.sse import sse_frames

router = APIRouter(prefix="/api/v1/conversations", tags=["conversations"], responses=AUTHENTICATED)
admin_router = APIRouter(prefix="/api/v1/admin/conversations", tags=["admin"],
                         dependencies=[require_role("admin")], responses=AUTHENTICATED)
_NOT_FOUND = error_responses(404)


@router.get("", response_model=ConversationList)
async def list_conversations(principal: PrincipalDep, db: DatabaseDep,
                             limit: Annotated[int, Query(ge=1, le=200)] = 50,
                             offset: Offset = 0) -> ConversationList:
    rows = await browse.list_conversations(db, principal, limit=limit, offset=offset)
    return ConversationList(conversations=[ConversationView.of(row) for row in rows])


@router.get("/{conversation_id}", response_model=ConversationView, responses=_NOT_FOUND)
async def get_conversation(conversation_id: ResourceId, principal: PrincipalDep, db: DatabaseDep) -> ConversationView:
    return ConversationView.of(await browse.get_conversation(db, principal, conversation_id))


@router.delete("/{conversation_id}", status_code=204, dependencies=[require_role("member")], responses=_NOT_FOUND)
async def delete_conversation(conversation_id: ResourceId, principal: PrincipalDep, erasure: ErasureDep) -> None:
    """Delete the conversation with its messages, artifacts, answer streams and agent threads."""
    await erasure.delete(principal, conversation_id)


class ConversationChange(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"title": "Refund questions"}]})
    title: str = Field(min_length=1, max_length=200)


@router.patch("/{conversation_id}", dependencies=[require_role("member")], response_model=ConversationView,
              responses={**BODY, **_NOT_FOUND})
async def rename_conversation(conversation_id: ResourceId, body: ConversationChange, principal: PrincipalDep,
                              db: DatabaseDep) -> ConversationView:
    """Rename one's own conversation."""
    title = " ".join(body.title.split())
    if not title:
        raise InvalidRequest("title must not be blank.")
    return ConversationView.of(await browse.rename_conversation(db, principal, conversation_id, title))


@router.get("/{conversation_id}/messages", response_model=MessageList, responses=_NOT_FOUND)
async def list_messages(conversation_id: ResourceId, principal: PrincipalDep, db: DatabaseDep,
                        limit: Annotated[int, Query(ge=1, le=500)] = 200,
                        offset: Offset = 0,
                        cursor: Annotated[str | None, Query(min_length=1, max_length=200, description=(
                            "Where to go on from: the `next_cursor` of the page before (instead of `offset`)."
                        ))] = None) -> MessageList:
    """The conversation's messages, oldest first, a page at a time (`next_cursor` until the last page)."""
    if cursor is not None and offset:
        raise InvalidRequest("Send either cursor or offset, not both.")
    page = await browse.list_messages(db, principal, conversation_id, limit=limit, offset=offset, cursor=cursor)
    return MessageList(messages=[MessageView.of(row) for row in page.messages], next_cursor=page.next_cursor)


EventId = Annotated[int | None, Query(ge=0, le=10**15, description="The last event id the client saw "
                                      "(`Last-Event-ID` wins when both are sent).")]
EventIdHeader = Annotated[str | None, Header(alias="last-event-id", pattern=r"^[0-9]{1,15}$",
                                             description="The last event id the client saw (an EventSource "
                                                         "sends it when it reconnects).")]
_STREAM_RESPONSES = {
    200: {"description": "Server-Sent Events after the given id: the rest of the answer's `token`s, `sources`, "
          "then `done` (its `answer` is the whole text) or a typed `error` (`producer_lost`: the server producing "
          "the answer stopped, and the message is marked failed; `replay_gap`: those events are no longer "
          "buffered; or the answer's own failure). A finished answer no longer buffered answers `sources` and "
          "`done` (or its stored `error`) at once. The body is always `text/event-stream`; the schema describes "
          "one event.", "model": AnswerStreamEvent,
          "content": {"text/event-stream": {"schema": {"$ref": "#/components/schemas/AnswerStreamEvent"}}}},
    **_NOT_FOUND,
    **COUNTED,
}


@router.get("/{conversation_id}/messages/{message_id}/stream", response_model=None,
            responses=_STREAM_RESPONSES)
async def resume_answer_stream(conversation_id: ResourceId, message_id: ResourceId, principal: CountedPrincipalDep,
                               streams: StreamsDep, last_event_id: EventId = None,
                               last_event_header: EventIdHeader = None) -> EventSourceResponse:
    """Resume an answer's stream (from `POST /api/v1/chat/ask`, or over `/ws`) after the last event the
    client received; with no id, from its start. Generation never depends on a client being connected."""
    after = int(last_event_header) if last_event_header is not None else last_event_id or 0
    events = await streams.resume(principal, conversation_id, message_id, after=after)
    return EventSourceResponse(sse_frames(events), ping=15)


@admin_router.get("", response_model=AdminConversationList)
async def admin_list_conversations(principal: PrincipalDep, db: DatabaseDep,
                                   user_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
                                   limit: Annotated[int, Query(ge=1, le=200)] = 50,
                                   offset: Offset = 0) -> AdminConversationList:
    """Every conversation the admin administers (its division's, or the organisation's): metadata only."""
    rows = await browse.administered(db, principal, user_id=user_id, limit=limit, offset=offset)
    return AdminConversationList(conversations=[AdminConversationView.of(row) for row in rows],
                                 next_offset=offset + limit if len(rows) == limit else None)


@admin_router.delete("/{conversation_id}", status_code=204, responses=_NOT_FOUND)
async def admin_erase_conversation(conversation_id: ResourceId, principal: PrincipalDep, erasure: ErasureDep,
                                   ip: ClientIp) -> None:
    """Erase any conversation the admin administers, with everything it holds; audited (``conversation.erase``)."""
    await erasure.erase(principal, conversation_id, ip=ip)
