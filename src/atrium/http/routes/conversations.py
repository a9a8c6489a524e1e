"""Conversations of the caller's organisation and their messages."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from atrium.conversations import repository as repo
from atrium.http.deps import Offset, PrincipalDep, ResourceId, ServicesDep, require_role
from atrium.store.models import Conversation, Message

router = APIRouter(prefix="/api/v1/conversations", tags=["conversations"])


def conversation_view(row: Conversation) -> dict[str, Any]:
    return {"id": row.id, "title": row.title, "created_at": row.created_at.isoformat(),
            "updated_at": row.updated_at.isoformat()}


def message_view(row: Message) -> dict[str, Any]:
    return {"id": row.id, "role": row.role, "content": row.content, "status": row.status, "model": row.model,
            "sources": row.sources or [], "usage": row.usage, "error": row.error,
            "created_at": row.created_at.isoformat()}


@router.get("")
async def list_conversations(principal: PrincipalDep, services: ServicesDep,
                             limit: Annotated[int, Query(ge=1, le=200)] = 50,
                             offset: Offset = 0) -> dict[str, Any]:
    async with services.db.tenant_session(principal.org_id) as session:
        rows = await repo.list_conversations(session, principal.org_id, principal.user_id, limit, offset)
    return {"conversations": [conversation_view(row) for row in rows]}


@router.get("/{conversation_id}")
async def get_conversation(conversation_id: ResourceId, principal: PrincipalDep,
                           services: ServicesDep) -> dict[str, Any]:
    async with services.db.tenant_session(principal.org_id) as session:
        return conversation_view(await repo.get_conversation(session, principal.org_id, conversation_id))


@router.delete("/{conversation_id}", status_code=204, dependencies=[require_role("member")])
async def delete_conversation(conversation_id: ResourceId, principal: PrincipalDep, services: ServicesDep) -> None:
    async with services.db.tenant_session(principal.org_id) as session:
        await repo.delete_conversation(session, principal.org_id, conversation_id)


@router.get("/{conversation_id}/messages")
async def list_messages(conversation_id: ResourceId, principal: PrincipalDep, services: ServicesDep,
                        limit: Annotated[int, Query(ge=1, le=500)] = 200,
                        offset: Offset = 0) -> dict[str, Any]:
    async with services.db.tenant_session(principal.org_id) as session:
        rows = await repo.list_messages(session, principal.org_id, conversation_id, limit, offset)
    return {"messages": [message_view(row) for row in rows]}
