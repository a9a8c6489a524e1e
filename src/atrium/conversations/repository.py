"""Conversations and messages in the database. A conversation is private to its owner (see
``atrium.accounts.ownership``): the caller-facing functions take the principal and answer ``NotFound`` for
anyone else's; ``history`` and ``finish_message`` serve the answer run (and ``finish_message`` a reader
that found the run abandoned), which already holds the conversation, and take the tenant. Every change of
a conversation or message is appended to the sync change log (``conversations/changes.py``) in the same
transaction. Admins list and erase through ``atrium.conversations.admin``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.accounts.ownership import owned_by, owner_columns
from atrium.accounts.principal import Principal
from atrium.conversations import changes
from atrium.errors import InvalidRequest, NotFound
from atrium.gateway.ports import ChatMessage
from atrium.store.models import Change, Conversation, Message

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


async def delete_conversation(session: AsyncSession, principal: Principal, conversation_id: str) -> list[str]:
    conversation = await get_conversation(session, principal, conversation_id)
    return await erase(session, conversation)


async def erase(session: AsyncSession, conversation: Conversation) -> list[str]:
    """Delete ``conversation``, its messages and its earlier change-log entries (whoever the caller checked
    it for); one ``delete`` change stays, the tombstone that tells sync clients. The messages' ids."""
    org_id = conversation.org_id
    message_ids = list(await session.scalars(select(Message.id).where(Message.org_id == org_id,
                                                                      Message.conversation_id == conversation.id)))
    # The tombstone first, so its ``seq`` is above every cursor handed out (SQLite would reuse the numbers
    # of deleted rows at the top), then every earlier entry of the conversation.
    changes.record(session, conversation, "conversation", conversation.id, "delete")
    await session.flush()
    tombstone = await session.scalar(select(func.max(Change.seq)).where(Change.org_id == org_id,
                                                                        Change.conversation_id == conversation.id))
    await session.execute(delete(Change).where(Change.org_id == org_id, Change.conversation_id == conversation.id,
                                               Change.seq < tombstone))
    await session.execute(delete(Message).where(Message.org_id == org_id, Message.conversation_id == conversation.id))
    await session.delete(conversation)
    return message_ids


async def rename_conversation(session: AsyncSession, principal: Principal, conversation_id: str,
                              title: str) -> Conversation:
    conversation = await get_conversation(session, principal, conversation_id)
    conversation.title = title
    conversation.updated_at = datetime.now(UTC)
    changes.record(session, conversation, "conversation", conversation.id, "upsert")
    return conversation


async def list_messages(session: AsyncSession, principal: Principal, conversation_id: str, limit: int = 200,
                        offset: int = 0, after: str | None = None) -> list[Message]:
    """The conversation's messages, oldest first; ``after``: only those after that message (a cursor)."""
    await get_conversation(session, principal, conversation_id)
    query = select(Message).where(Message.org_id == principal.org_id, Message.conversation_id == conversation_id)
    if after is not None:
        anchor = await session.scalar(query.where(Message.id == after))
        if anchor is None:
            raise InvalidRequest("cursor does not belong to this conversation.")
        query = query.where(or_(Message.created_at > anchor.created_at,
                                and_(Message.created_at == anchor.created_at, Message.id > anchor.id)))
    rows = await session.scalars(query.order_by(Message.created_at, Message.id).limit(limit).offset(offset))
    return list(rows)


async def history(session: AsyncSession, org_id: str, conversation_id: str,
                  before_message_id: str | None = None) -> list[ChatMessage]:
    """The last complete turns (before ``before_message_id``, when given), oldest first, as model messages."""
    where = [Message.org_id == org_id, Message.conversation_id == conversation_id, Message.status == "complete",
             Message.role.in_(("user", "assistant"))]
    if before_message_id is not None:
        where.append(Message.id != before_message_id)
    rows = await session.scalars(
        select(Message).where(*where)
        .order_by(Message.created_at.desc(), Message.id.desc()).limit(HISTORY_MESSAGES)
    )
    return [ChatMessage(row.role, row.content) for row in reversed(list(rows))]  # type: ignore[arg-type]


async def get_answer(session: AsyncSession, principal: Principal, conversation_id: str,
                     message_id: str) -> Message:
    """An assistant message of the caller's own conversation; ``NotFound`` otherwise."""
    await get_conversation(session, principal, conversation_id)
    row = await session.scalar(select(Message).where(
        Message.org_id == principal.org_id, Message.conversation_id == conversation_id, Message.id == message_id,
        Message.role == "assistant"))
    if row is None:
        raise NotFound("No such answer in this conversation.")
    return row


async def get_message(session: AsyncSession, org_id: str, message_id: str) -> Message | None:
    return await session.scalar(select(Message).where(Message.org_id == org_id, Message.id == message_id))


async def finish_message(session: AsyncSession, org_id: str, message_id: str, **values: Any) -> bool:
    """Store the end of a ``pending`` answer (its text, status, sources...), once: an answer already
    finished (e.g. failed by a reader that found its run abandoned), or deleted with its conversation, is
    left alone (False)."""
    done = await session.execute(update(Message).where(Message.org_id == org_id, Message.id == message_id,
                                                       Message.status == "pending").values(**values))
    if not done.rowcount:  # type: ignore[attr-defined]
        return False
    conversation_id = await session.scalar(select(Message.conversation_id).where(Message.org_id == org_id,
                                                                                Message.id == message_id))
    conversation = await session.scalar(select(Conversation).where(Conversation.org_id == org_id,
                                                                   Conversation.id == conversation_id))
    if conversation is not None:
        conversation.updated_at = datetime.now(UTC)
        changes.record(session, conversation, "message", message_id, "upsert")
        changes.record(session, conversation, "conversation", conversation.id, "upsert")
    return True
