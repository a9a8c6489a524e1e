"""Fixtures for the account-administration use cases: a migrated SQLite database with the first-start
admin (the platform owner), a fast (but real) argon2 hasher, and helpers to act as anyone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from atrium.accounts.admin import AccountAdmin
from atrium.accounts.bootstrap import ensure_admin
from atrium.accounts.invitations import Invitee
from atrium.accounts.passwords import Passwords
from atrium.accounts.principal import Principal, Role
from atrium.store.engine import Database, build_engine
from atrium.store.migrate import upgrade
from atrium.store.models import AuditEvent, Invitation


@dataclass
class World:
    db: Database
    passwords: Passwords
    org_id: str  # the first organisation
    owner: Principal  # its first-start owner, acting with an API key

    @asynccontextmanager
    async def acting(self, actor: Principal) -> AsyncIterator[AccountAdmin]:
        """``AccountAdmin`` as ``actor`` in one committed transaction (as ``administer`` runs it)."""
        async with self.db.system_session() as session:
            yield AccountAdmin(session, actor, passwords=self.passwords, ip="192.0.2.1")

    async def person(self, role: Role, *, org_id: str | None = None, email: str | None = None,
                     division_id: str | None = None, password: str | None = None) -> Principal:
        """A new user with ``role`` in ``org_id`` (default: the first org), as the principal they act as."""
        org_id = org_id or self.org_id
        actor = Principal(org_id=org_id, user_id=None, role="owner", via="cli")
        async with self.acting(actor) as admin:
            member = await admin.create_user(org_id, email=email or f"{role}-{anyio_id()}@example.org",
                                             name=role.title(), role=role, division_id=division_id,
                                             password=password)
        return Principal(org_id=org_id, user_id=member.user.id, role=role, division_id=division_id,
                         api_key_id="k" * 32)

    @asynccontextmanager
    async def answering(self, invitee: Principal) -> AsyncIterator[Invitee]:
        """``Invitee`` as ``invitee`` in one committed transaction (as ``answering`` runs it)."""
        async with self.db.system_session() as session:
            yield Invitee(session, invitee, ip="192.0.2.2")

    async def join(self, inviter: Principal, invitee: Principal, email: str, role: Role = "member",
                   division_id: str | None = None) -> Invitation:
        """``inviter`` invites ``email`` into its organisation and ``invitee`` (that user) accepts."""
        async with self.acting(inviter) as admin:
            invitation = await admin.invite(inviter.org_id, email=email, role=role, division_id=division_id)
        async with self.answering(invitee) as answer:
            accepted, _ = await answer.accept(invitation.id)
        return accepted

    async def audit(self, org_id: str | None = None) -> list[AuditEvent]:
        async with self.db.system_session() as session:
            query = select(AuditEvent).order_by(AuditEvent.id)
            if org_id is not None:
                query = query.where(AuditEvent.org_id == org_id)
            return list((await session.scalars(query)).all())

    async def actions(self, org_id: str | None = None) -> list[str]:
        return [event.action for event in await self.audit(org_id)]


_counter = iter(range(1, 1_000_000))


def anyio_id() -> str:
    return str(next(_counter))


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'accounts.db'}"
    await anyio.to_thread.run_sync(upgrade, url)
    db = Database(build_engine(url))
    created = await ensure_admin(db, preset_key=None)
    assert created is not None
    # Cheap parameters, same library and code path: these tests hash many passwords.
    passwords = Passwords(PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    owner = Principal(org_id=created.org_id, user_id=created.user_id, role="owner", api_key_id="o" * 32)
    try:
        yield World(db, passwords, created.org_id, owner)
    finally:
        await db.dispose()


def every_value(row: Any) -> str:
    """Every column of a row as one string (to search it for secrets)."""
    return " ".join(str(getattr(row, column.key)) for column in row.__table__.columns)
