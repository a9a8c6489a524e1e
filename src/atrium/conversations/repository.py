"""Conversations and messages in the database. A conversation is private to its owner (see
``atrium.accounts.ownership``): the caller-facing functions take the principal and answer ``NotFound`` for
anyone else's; ``history`` and ``finish_message`` serve the answer run, which already holds the
conversation, and take the tenant. Admins list and erase through ``atrium.conversations.admin``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.accounts.ownership import owned_by, owner_columns
from atrium.accounts.principal import Principal
from atrium.errors import NotFound
from atrium.gateway.ports import ChatMessage
from atrium.store.models import Conversation, Message

HISTORY_MESSAGES = 6


def new_conversation(principal: Principal, title: str) -> Conversation:
    return Conversation(org_id=principal.org_id, division_id=principal.division_id, title=title,
                        **owner_columns(principal))


async def get_conversation(session: AsyncSession, principal: Principal, conversation_id: str) -> Conversation:
    row = await session.scalar(
        select(Conversation).where(Conversation.org_id == principal.org_id, Conversation.id == conversation_id,
                                   owned_by(Conversation, principal))
    )
    if row is None:
        raise NotFound("No such conversation.")
    return row


async def list_conversations(session: AsyncSession, principal: Principal, limit: int,
                             offset: int) -> list[Conversation]:
    query = select(Conversation).where(Conversation.org_id == principal.org_id, owned_by(Conversation, principal))
    rows = await session.scalars(query.order_by(Conversation.updated_at.desc(), Conversation.id)
                                 .limit(limit).offset(offset))
    return list(rows)


async def delete_conversation(session: AsyncSession, principal: Principal, conversation_id: str) -> None:
    conversation = await get_conversation(session, principal, conversation_id)
    await erase(session, conversation)


async def erase(session: AsyncSession, conversation: Conversation) -> None:
    """Delete ``conversation`` and its messages (whoever the caller checked it for)."""
    await session.execute(delete(Message).where(Message.org_id == conversation.org_id,
                                                Message.conversation_id == conversation.id))
    await session.delete(conversation)


async def list_messages(session: AsyncSession, principal: Principal, conversation_id: str, limit: int = 200,
                        offset: int = 0) -> list[Message]:
    await get_conversation(session, principal, conversation_id)
    rows = await session.scalars(
        select(Message).where(Message.org_id == principal.org_id, Message.conversation_id == conversation_id)
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
