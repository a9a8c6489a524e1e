"""Reading and deleting conversations outside an answer run: the caller's own (another user's is
``NotFound``, for every role), and, for admins, every conversation they administer (metadata only) with an
audited erase. Each use case is one transaction and returns the rows it read."""

from __future__ import annotations

from atrium.accounts.ownership import principal_session
from atrium.accounts.principal import Principal
from atrium.conversations import admin
from atrium.conversations import repository as repo
from atrium.store.engine import Database
from atrium.store.models import Conversation, Message


async def list_conversations(db: Database, principal: Principal, *, limit: int, offset: int) -> list[Conversation]:
    async with principal_session(db, principal) as session:
        return await repo.list_conversations(session, principal, limit, offset)


async def get_conversation(db: Database, principal: Principal, conversation_id: str) -> Conversation:
    async with principal_session(db, principal) as session:
        return await repo.get_conversation(session, principal, conversation_id)


async def delete_conversation(db: Database, principal: Principal, conversation_id: str) -> None:
    async with principal_session(db, principal) as session:
        await repo.delete_conversation(session, principal, conversation_id)


async def list_messages(db: Database, principal: Principal, conversation_id: str, *, limit: int,
                        offset: int) -> list[Message]:
    async with principal_session(db, principal) as session:
        return await repo.list_messages(session, principal, conversation_id, limit, offset)


async def administered(db: Database, principal: Principal, *, user_id: str | None, limit: int,
                       offset: int) -> list[Conversation]:
    """Every conversation the admin administers (its division's, or the organisation's), newest first."""
    async with db.tenant_session(principal.org_id) as session:
        return await admin.list_all(session, principal, user_id=user_id, limit=limit, offset=offset)


async def erase(db: Database, principal: Principal, conversation_id: str, *, ip: str | None) -> None:
    """Erase a conversation the admin administers, with its messages; audited (``conversation.erase``)."""
    async with db.tenant_session(principal.org_id) as session:
        await admin.erase(session, principal, conversation_id, ip=ip)
