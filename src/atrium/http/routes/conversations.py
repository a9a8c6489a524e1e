"""The caller's own conversations and their messages; and, for admins, every conversation they administer
(metadata only) with an audited erase. Another user's conversation is ``404`` here, for every role."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from atrium.conversations import browse
from atrium.http.deps import ClientIp, DatabaseDep, Offset, PrincipalDep, ResourceId, require_role
from atrium.http.schemas.conversations import (
    AdminConversationList,
    AdminConversationView,
    ConversationList,
    ConversationView,
    MessageList,
    MessageView,
)
from atrium.http.schemas.errors import AUTHENTICATED, error_responses

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
async def delete_conversation(conversation_id: ResourceId, principal: PrincipalDep, db: DatabaseDep) -> None:
    await browse.delete_conversation(db, principal, conversation_id)


@router.get("/{conversation_id}/messages", response_model=MessageList, responses=_NOT_FOUND)
async def list_messages(conversation_id: ResourceId, principal: PrincipalDep, db: DatabaseDep,
                        limit: Annotated[int, Query(ge=1, le=500)] = 200,
                        offset: Offset = 0) -> MessageList:
    rows = await browse.list_messages(db, principal, conversation_id, limit=limit, offset=offset)
    return MessageList(messages=[MessageView.of(row) for row in rows])


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
async def admin_erase_conversation(conversation_id: ResourceId, principal: PrincipalDep, db: DatabaseDep,
                                   ip: ClientIp) -> None:
    """Erase any conversation the admin administers, with its messages; audited (``conversation.erase``)."""
    await browse.erase(db, principal, conversation_id, ip=ip)
