"""Reading conversations outside an answer run: the caller's own (another user's is ``NotFound``, for every
role), and, for admins, every conversation they administer (metadata only). Deleting one is
``conversations/erasure.py``. Each use case is one transaction and returns the rows it read."""

from __future__ import annotations

from dataclasses import dataclass

from atrium.accounts.ownership import principal_session
from atrium.accounts.principal import Principal
from atrium.conversations import admin
from atrium.conversations import repository as repo
from atrium.conversations.cursors import decode_cursor, encode_cursor
from atrium.store.engine import Database
from atrium.store.models import Conversation, Message


async def list_conversations(db: Database, principal: Principal, *, limit: int, offset: int) -> list[Conversation]:
    async with principal_session(db, principal) as session:
        return await repo.list_conversations(session, principal, limit, offset)


async def get_conversation(db: Database, principal: Principal, conversation_id: str) -> Conversation:
    async with principal_session(db, principal) as session:
        return await repo.get_conversation(session, principal, conversation_id)


async def rename_conversation(db: Database, principal: Principal, conversation_id: str, title: str) -> Conversation:
    async with principal_session(db, principal) as session:
        return await repo.rename_conversation(session, principal, conversation_id, title)


@dataclass(frozen=True, slots=True)
class MessagePage:
    messages: list[Message]
    next_cursor: str | None  # where the next page starts; None: this page is the last


async def list_messages(db: Database, principal: Principal, conversation_id: str, *, limit: int,
                        offset: int = 0, cursor: str | None = None) -> MessagePage:
    """A page of the conversation's messages, oldest first: from ``offset``, or after ``cursor`` (the
    ``next_cursor`` of the page before), which stays right while new messages are added."""
    after = decode_cursor(cursor, m=str)["m"] if cursor is not None else None
    async with principal_session(db, principal) as session:
        rows = await repo.list_messages(session, principal, conversation_id, limit, offset, after)
    return MessagePage(rows, encode_cursor(m=rows[-1].id) if len(rows) == limit else None)


async def administered(db: Database, principal: Principal, *, user_id: str | None, limit: int,
                       offset: int) -> list[Conversation]:
    """Every conversation the admin administers (its division's, or the organisation's), newest first."""
    async with db.tenant_session(principal.org_id) as session:
        return await admin.list_all(session, principal, user_id=user_id, limit=limit, offset=offset)

