"""Threads of the agents API, on behalf of a principal: who may see and change them.

A thread is owned like a conversation (``atrium.accounts.ownership``): its creator's user, or the key for
a key that acts as no user. ``visibility`` ``private`` (the default: its owner only; anyone else, admins
included, gets ``404``) or ``org`` (the organisation may read it: state, history, runs, join; only its
owner may run it, change it or delete it: ``403`` for the other readers). Another organisation's thread is
always ``404``. On PostgreSQL the same rules are Row-Level Security policies (migration 0008).

Each use case is one transaction (``principal_session``) and returns the rows it read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.accounts.ownership import is_owner, owned_by, owner_columns, principal_session
from atrium.accounts.principal import Principal
from atrium.errors import Conflict, Forbidden, InvalidRequest, NotFound
from atrium.store.engine import Database
from atrium.store.models import AgentRun, AgentThread

THREAD_STATUSES = ("idle", "busy", "interrupted", "error")
VISIBILITIES = ("private", "org")
ACTIVE_RUN_STATUSES = ("pending", "running")
_FILTER_KEY = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def readable_threads(principal: Principal) -> ColumnElement[bool]:
    return or_(AgentThread.visibility == "org", owned_by(AgentThread, principal))


async def readable_thread(session: AsyncSession, principal: Principal, thread_id: str) -> AgentThread:
    """The thread if ``principal`` may read it; ``NotFound`` otherwise (another's private thread, another
    organisation's, none)."""
    row = await session.scalar(select(AgentThread).where(
        AgentThread.org_id == principal.org_id, AgentThread.id == thread_id, readable_threads(principal)))
    if row is None:
        raise NotFound("No such thread.")
    return row


async def writable_thread(session: AsyncSession, principal: Principal, thread_id: str, *,
                          lock: bool = False) -> AgentThread:
    """The thread if ``principal`` owns it; ``Forbidden`` for a reader who does not, ``NotFound`` below."""
    row = await readable_thread(session, principal, thread_id)
    if not is_owner(row, principal):
        raise Forbidden("Only the thread's owner may change it or run it.")
    if lock and session.get_bind().dialect.name == "postgresql":
        await session.refresh(row, with_for_update=True)
    return row


async def create_thread(db: Database, principal: Principal, *, thread_id: str | None,
                        metadata: Mapping[str, Any] | None, visibility: str = "private",
                        if_exists: str = "raise") -> AgentThread:
    """A new thread owned by ``principal``. A ``thread_id`` the caller chose that exists already: the
    caller's own thread with ``if_exists="do_nothing"``, else ``Conflict`` (thread ids are global: the
    checkpointer keys state by them)."""
    if thread_id is not None:
        async with principal_session(db, principal) as session:
            existing = await session.scalar(select(AgentThread).where(
                AgentThread.org_id == principal.org_id, AgentThread.id == thread_id, readable_threads(principal)))
        if existing is not None and if_exists == "do_nothing" and is_owner(existing, principal):
            return existing
        if existing is not None or await _id_taken(db, thread_id):
            raise Conflict("A thread with this id exists already.")
    row = AgentThread(org_id=principal.org_id, division_id=principal.division_id, visibility=visibility,
                      meta=dict(metadata or {}), status="idle", **owner_columns(principal))
    if thread_id is not None:
        row.id = thread_id
    try:
        async with principal_session(db, principal) as session:
            session.add(row)
    except IntegrityError as error:  # the same id, made at the same moment
        raise Conflict("A thread with this id exists already.") from error
    return row


async def _id_taken(db: Database, thread_id: str) -> bool:
    """Whether any organisation has a thread ``thread_id`` (ids are global; the answer says only "taken")."""
    async with db.system_session() as session:
        return await session.scalar(select(AgentThread.id).where(AgentThread.id == thread_id)) is not None


async def get_thread(db: Database, principal: Principal, thread_id: str) -> AgentThread:
    async with principal_session(db, principal) as session:
        return await readable_thread(session, principal, thread_id)


def _metadata_filter(query: Select[Any], metadata: Mapping[str, Any]) -> Select[Any]:
    for key, value in metadata.items():
        if not _FILTER_KEY.fullmatch(key):
            raise InvalidRequest("metadata filter keys are letters, digits, '_', '-' and '.' (at most 64).")
        field = AgentThread.meta[key]
        if isinstance(value, bool):
            query = query.where(field.as_boolean() == value)
        elif isinstance(value, int):
            query = query.where(field.as_integer() == value)
        elif isinstance(value, float):
            query = query.where(field.as_float() == value)
        elif isinstance(value, str):
            query = query.where(field.as_string() == value)
        else:
            raise InvalidRequest("metadata filters take strings, numbers and booleans.")
    return query


async def search_threads(db: Database, principal: Principal, *, metadata: Mapping[str, Any] | None = None,
                         status: str | None = None, ids: list[str] | None = None, limit: int = 10,
                         offset: int = 0, sort_by: str = "created_at", sort_order: str = "desc") -> list[AgentThread]:
    """The threads ``principal`` may read, filtered; newest first unless asked otherwise."""
    query = select(AgentThread).where(AgentThread.org_id == principal.org_id, readable_threads(principal))
    if metadata:
        query = _metadata_filter(query, metadata)
    if status is not None:
        query = query.where(AgentThread.status == status)
    if ids:
        query = query.where(AgentThread.id.in_(ids))
    column = {"thread_id": AgentThread.id, "status": AgentThread.status,
              "updated_at": AgentThread.updated_at}.get(sort_by, AgentThread.created_at)
    order = column.asc() if sort_order == "asc" else column.desc()
    async with principal_session(db, principal) as session:
        return list(await session.scalars(query.order_by(order, AgentThread.id).limit(limit).offset(offset)))


async def update_thread(db: Database, principal: Principal, thread_id: str, *,
                        metadata: Mapping[str, Any] | None, visibility: str | None) -> AgentThread:
    """Merge ``metadata`` into the thread's (the platform's PATCH), and change its visibility."""
    async with principal_session(db, principal) as session:
        row = await writable_thread(session, principal, thread_id)
        if metadata:
            row.meta = {**row.meta, **metadata}
        if visibility is not None:
            row.visibility = visibility
        row.updated_at = datetime.now(UTC)
        return row


async def delete_thread_row(db: Database, principal: Principal, thread_id: str) -> AgentThread:
    """Delete the thread and its runs (the caller erases its checkpoints and stops its runs)."""
    async with principal_session(db, principal) as session:
        row = await writable_thread(session, principal, thread_id)
        for run in await session.scalars(select(AgentRun).where(AgentRun.org_id == principal.org_id,
                                                                 AgentRun.thread_id == thread_id)):
            await session.delete(run)
        await session.delete(row)
        return row


async def active_runs(session: AsyncSession, org_id: str, thread_id: str) -> list[AgentRun]:
    return list(await session.scalars(select(AgentRun).where(
        AgentRun.org_id == org_id, AgentRun.thread_id == thread_id,
        AgentRun.status.in_(ACTIVE_RUN_STATUSES)).order_by(AgentRun.created_at)))
