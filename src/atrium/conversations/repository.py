"""Conversations and messages in the database; the tenant is the first argument of every function."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.errors import NotFound
from atrium.gateway.ports import ChatMessage
from atrium.store.models import Conversation, Message

HISTORY_MESSAGES = 6


async def get_conversation(session: AsyncSession, org_id: str, conversation_id: str) -> Conversation:
    row = await session.scalar(
        select(Conversation).where(Conversation.org_id == org_id, Conversation.id == conversation_id)
    )
    if row is None:
        raise NotFound("No such conversation.")
    return row


async def list_conversations(session: AsyncSession, org_id: str, user_id: str | None, limit: int,
                             offset: int) -> list[Conversation]:
    query = select(Conversation).where(Conversation.org_id == org_id)
    if user_id is not None:
        query = query.where(Conversation.user_id == user_id)
    rows = await session.scalars(query.order_by(Conversation.updated_at.desc()).limit(limit).offset(offset))
    return list(rows)


async def delete_conversation(session: AsyncSession, org_id: str, conversation_id: str) -> None:
    conversation = await get_conversation(session, org_id, conversation_id)
    await session.execute(delete(Message).where(Message.org_id == org_id,
                                                Message.conversation_id == conversation.id))
    await session.delete(conversation)


async def list_messages(session: AsyncSession, org_id: str, conversation_id: str, limit: int = 200,
                        offset: int = 0) -> list[Message]:
    await get_conversation(session, org_id, conversation_id)
    rows = await session.scalars(
        select(Message).where(Message.org_id == org_id, Message.conversation_id == conversation_id)
        .order_by(Message.created_at, Message.id).limit(limit).offset(offset)
    )
    return list(rows)


async def history(session: AsyncSession, org_id: str, conversation_id: str,
                  before_message_id: str) -> list[ChatMessage]:
    """The last complete turns before ``before_message_id``, oldest first, as model messages."""
    rows = await session.scalars(
        select(Message).where(Message.org_id == org_id, Message.conversation_id == conversation_id,
                              Message.status == "complete", Message.id != before_message_id,
                              Message.role.in_(("user", "assistant")))
        .order_by(Message.created_at.desc(), Message.id.desc()).limit(HISTORY_MESSAGES)
    )
    return [ChatMessage(row.role, row.content) for row in reversed(list(rows))]  # type: ignore[arg-type]


async def finish_message(session: AsyncSession, org_id: str, message_id: str, **values: Any) -> None:
    message = await session.scalar(select(Message).where(Message.org_id == org_id, Message.id == message_id))
    if message is None:  # deleted with its conversation while the answer was generated
        return
    for key, value in values.items():
        setattr(message, key, value)
    conversation = await session.scalar(select(Conversation).where(Conversation.org_id == org_id,
                                                                   Conversation.id == message.conversation_id))
    if conversation is not None:
        conversation.updated_at = datetime.now(UTC)
