"""Helpers for tenant-isolation tests: a PostgreSQL database with a normal (non-superuser) application
role, and a second tenant with its own user and API key."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

from sqlalchemy.engine import make_url

from atrium.accounts.api_keys import create_key
from atrium.store.engine import Database
from atrium.store.models import Membership, Organization, User
from tests.postgres_fixtures import PostgresServer


@dataclass(frozen=True)
class RoleUrls:
    owner_url: str  # the superuser: runs migrations (ATRIUM_MIGRATION_DATABASE_URL)
    app_url: str  # a LOGIN role without SUPERUSER or BYPASSRLS (ATRIUM_DATABASE_URL)
    role: str


async def database_with_app_role(postgres: PostgresServer) -> RoleUrls:
    """A fresh database and a fresh normal login role for the application (roles are cluster-wide, so
    each test gets its own)."""
    owner_url = await asyncio.to_thread(postgres.create_database)
    role = "app_" + uuid.uuid4().hex[:10]
    await asyncio.to_thread(postgres.psql,
                            f"CREATE ROLE {role} LOGIN PASSWORD 'app-password' NOSUPERUSER NOBYPASSRLS;")
    app_url = make_url(owner_url).set(username=role, password="app-password").render_as_string(hide_password=False)
    return RoleUrls(owner_url=owner_url, app_url=app_url, role=role)


@dataclass(frozen=True)
class Tenant:
    org_id: str
    user_id: str
    raw_key: str


async def create_tenant(db: Database, name: str, *, org_id: str | None = None, role: str = "owner") -> Tenant:
    """An organisation with one user (a member with ``role``) and an API key for that user."""
    async with db.system_session() as session:
        org = Organization(name=name) if org_id is None else Organization(id=org_id, name=name)
        session.add(org)
        await session.flush()
        user = User(org_id=org.id, email=f"{uuid.uuid4().hex[:8]}@{name.lower()}.example", name=name, role=role)
        session.add(user)
        await session.flush()
        session.add(Membership(org_id=org.id, user_id=user.id, role=role))
        _, raw = await create_key(session, org_id=org.id, user_id=user.id, role=role,  # type: ignore[arg-type]
                                  name=f"{name} key")
        return Tenant(org_id=org.id, user_id=user.id, raw_key=raw)
