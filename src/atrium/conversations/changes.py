"""The sync change log: every change of a conversation or message is appended (``record``) in the
transaction that makes it, with the conversation's owner, so an offline client asks ``GET /api/v1/sync``
for everything it may see since its cursor (``sync``) and misses nothing.

Order and completeness: changes are read in (``tx``, ``seq``) order. On SQLite writers take turns, so a
change with a lower ``seq`` can never appear after a higher one was read. On PostgreSQL ``tx`` is the
writing transaction's id and a read leaves out every change of a transaction that may still be running
(``tx`` at or above the snapshot's ``xmin``): those come in a later sync, after the cursor, never before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import BigInteger, Text, and_, cast, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.accounts.ownership import owned_by, principal_session
from atrium.accounts.principal import Principal
from atrium.conversations.cursors import decode_cursor, encode_cursor
from atrium.store.engine import Database
from atrium.store.models import Change, Conversation, Message

Entity = Literal["conversation", "message"]
Op = Literal["upsert", "delete"]


def record(session: AsyncSession, conversation: Conversation, entity: Entity, entity_id: str, op: Op) -> None:
    """Append one change (flushed with the transaction's other writes)."""
    session.add(Change(org_id=conversation.org_id, user_id=conversation.user_id,
                       api_key_id=conversation.api_key_id, entity=entity, entity_id=entity_id,
                       conversation_id=conversation.id, op=op))


@dataclass(frozen=True, slots=True)
class SyncItem:
    change: Change
    conversation: Conversation | None  # the current row of an upserted conversation (None: since deleted)
    message: Message | None  # the current row of an upserted message (None: since deleted)


@dataclass(frozen=True, slots=True)
class SyncPage:
    items: list[SyncItem]
    next_cursor: str  # send it back next time (the same cursor when nothing changed)
    has_more: bool  # more changes are ready: ask again at once


async def sync(db: Database, principal: Principal, cursor: str | None, *, limit: int) -> SyncPage:
    """The changes the caller may see (its own conversations and their messages) after ``cursor`` (None:
    from the beginning), oldest first, at most ``limit``; an entity changed more than once in the page is
    listed once, at its last change, with its current state."""
    after_tx, after_seq = -1, 0
    if cursor is not None:
        values = decode_cursor(cursor, t=int, s=int)
        after_tx, after_seq = values["t"], values["s"]
    async with principal_session(db, principal) as session:
        query = select(Change).where(Change.org_id == principal.org_id, owned_by(Change, principal),
                                     or_(Change.tx > after_tx, and_(Change.tx == after_tx, Change.seq > after_seq)))
        if not db.is_sqlite:
            xmin = cast(cast(func.pg_snapshot_xmin(func.pg_current_snapshot()), Text), BigInteger)
            query = query.where(Change.tx < xmin)
        rows = list(await session.scalars(query.order_by(Change.tx, Change.seq).limit(limit + 1)))
        has_more = len(rows) > limit
        rows = rows[:limit]
        latest = list({(row.entity, row.entity_id): row for row in rows}.values())
        latest.sort(key=lambda row: (row.tx, row.seq))
        conversations = await _conversations(session, principal, _upserted(latest, "conversation"))
        messages = await _messages(session, principal, _upserted(latest, "message"))
    items = [SyncItem(row, conversations.get(row.entity_id) if row.entity == "conversation" else None,
                      messages.get(row.entity_id) if row.entity == "message" else None) for row in latest]
    next_cursor = encode_cursor(t=rows[-1].tx, s=rows[-1].seq) if rows else (
        cursor if cursor is not None else encode_cursor(t=after_tx, s=after_seq))
    return SyncPage(items, next_cursor, has_more)


def _upserted(rows: list[Change], entity: str) -> list[str]:
    return [row.entity_id for row in rows if row.entity == entity and row.op == "upsert"]


async def _conversations(session: AsyncSession, principal: Principal, ids: list[str]) -> dict[str, Conversation]:
    if not ids:
        return {}
    found = await session.scalars(select(Conversation).where(
        Conversation.org_id == principal.org_id, Conversation.id.in_(ids), owned_by(Conversation, principal)))
    return {row.id: row for row in found}


async def _messages(session: AsyncSession, principal: Principal, ids: list[str]) -> dict[str, Message]:
    if not ids:
        return {}
    owned = select(Conversation.id).where(Conversation.org_id == principal.org_id, owned_by(Conversation, principal))
    found = await session.scalars(select(Message).where(
        Message.org_id == principal.org_id, Message.id.in_(ids), Message.conversation_id.in_(owned)))
    return {row.id: row for row in found}
