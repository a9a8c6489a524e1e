"""The caller's own conversations and their messages; and, for admins, every conversation they administer
(metadata only) with an audited erase. Another user's conversation is ``404`` here, for every role."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from atrium.accounts.ownership import principal_session
from atrium.conversations import admin as conversation_admin
from atrium.conversations import repository as repo
from atrium.http.deps import ClientIp, Offset, PrincipalDep, ResourceId, ServicesDep, require_role
from atrium.http.schemas.conversations import (
    AdminConversationList,
    ConversationList,
    ConversationView,
    MessageList,
)
from atrium.http.schemas.errors import AUTHENTICATED, error_responses
from atrium.store.models import Conversation, Message

router = APIRouter(prefix="/api/v1/conversations", tags=["conversations"], responses=AUTHENTICATED)
admin_router = APIRouter(prefix="/api/v1/admin/conversations", tags=["admin"],
                         dependencies=[require_role("admin")], responses=AUTHENTICATED)
_NOT_FOUND = error_responses(404)


def conversation_view(row: Conversation) -> dict[str, Any]:
    return {"id": row.id, "title": row.title, "created_at": row.created_at.isoformat(),
            "updated_at": row.updated_at.isoformat()}


def admin_conversation_view(row: Conversation) -> dict[str, Any]:
    """What an admin sees of a conversation: who owns it and when, not its title or messages."""
    return {"id": row.id, "user_id": row.user_id, "api_key_id": row.api_key_id, "division_id": row.division_id,
            "created_at": row.created_at.isoformat(), "updated_at": row.updated_at.isoformat()}


def message_view(row: Message) -> dict[str, Any]:
    return {"id": row.id, "role": row.role, "content": row.content, "status": row.status, "model": row.model,
            "sources": row.sources or [], "usage": row.usage, "error": row.error,
            "created_at": row.created_at.isoformat()}


@router.get("", response_model=ConversationList)
async def list_conversations(principal: PrincipalDep, services: ServicesDep,
                             limit: Annotated[int, Query(ge=1, le=200)] = 50,
                             offset: Offset = 0) -> dict[str, Any]:
    async with principal_session(services.db, principal) as session:
        rows = await repo.list_conversations(session, principal, limit, offset)
    return {"conversations": [conversation_view(row) for row in rows]}


@router.get("/{conversation_id}", response_model=ConversationView, responses=_NOT_FOUND)
async def get_conversation(conversation_id: ResourceId, principal: PrincipalDep,
                           services: ServicesDep) -> dict[str, Any]:
    async with principal_session(services.db, principal) as session:
        return conversation_view(await repo.get_conversation(session, principal, conversation_id))


@router.delete("/{conversation_id}", status_code=204, dependencies=[require_role("member")], responses=_NOT_FOUND)
async def delete_conversation(conversation_id: ResourceId, principal: PrincipalDep, services: ServicesDep) -> None:
    async with principal_session(services.db, principal) as session:
        await repo.delete_conversation(session, principal, conversation_id)


@router.get("/{conversation_id}/messages", response_model=MessageList, responses=_NOT_FOUND)
async def list_messages(conversation_id: ResourceId, principal: PrincipalDep, services: ServicesDep,
                        limit: Annotated[int, Query(ge=1, le=500)] = 200,
                        offset: Offset = 0) -> dict[str, Any]:
    async with principal_session(services.db, principal) as session:
        rows = await repo.list_messages(session, principal, conversation_id, limit, offset)
    return {"messages": [message_view(row) for row in rows]}


@admin_router.get("", response_model=AdminConversationList)
async def admin_list_conversations(principal: PrincipalDep, services: ServicesDep,
                                   user_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
                                   limit: Annotated[int, Query(ge=1, le=200)] = 50,
                                   offset: Offset = 0) -> dict[str, Any]:
    """Every conversation the admin administers (its division's, or the organisation's): metadata only."""
    async with services.db.tenant_session(principal.org_id) as session:
        rows = await conversation_admin.list_all(session, principal, user_id=user_id, limit=limit, offset=offset)
    return {"conversations": [admin_conversation_view(row) for row in rows],
            "next_offset": offset + limit if len(rows) == limit else None}


@admin_router.delete("/{conversation_id}", status_code=204, responses=_NOT_FOUND)
async def admin_erase_conversation(conversation_id: ResourceId, principal: PrincipalDep, services: ServicesDep,
                                   ip: ClientIp) -> None:
    """Erase any conversation the admin administers, with its messages; audited (``conversation.erase``)."""
    async with services.db.tenant_session(principal.org_id) as session:
        await conversation_admin.erase(session, principal, conversation_id, ip=ip)
