"""Helpers for the authentication API tests: users with passwords, logins, the audit trail."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import httpx
from sqlalchemy import select

from atrium.settings import Settings
from atrium.store.models import AuditEvent, Membership, Organization, User
from tests.conftest import RunningApp, make_settings


async def settings_of(data_dir: Path, **overrides: Any) -> Settings:
    """``make_settings`` off the event loop (it resolves the data dir on the filesystem)."""
    return await anyio.to_thread.run_sync(lambda: make_settings(data_dir, **overrides))


def anonymous(app: RunningApp) -> httpx.AsyncClient:
    """A client of the same app with no credentials."""
    return httpx.AsyncClient(transport=app.client._transport, base_url="http://atrium.test")


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def admin_org(app: RunningApp) -> str:
    async with app.services.db.system_session() as session:
        org_id = await session.scalar(select(Organization.id).order_by(Organization.created_at).limit(1))
    assert org_id is not None
    return str(org_id)


async def add_org(app: RunningApp, name: str) -> str:
    async with app.services.db.system_session() as session:
        org = Organization(name=name)
        session.add(org)
        await session.flush()
        return org.id


async def add_user(app: RunningApp, email: str, password: str | None, *, org_id: str | None = None,
                   role: str = "member", is_service: bool = False, disabled: bool = False) -> str:
    org_id = org_id or await admin_org(app)
    password_hash = await app.services.sessions.passwords.hash(password) if password is not None else None
    async with app.services.db.system_session() as session:
        user = User(org_id=org_id, email=email, name=email.split("@")[0], role=role, password_hash=password_hash,
                    is_service=is_service, disabled_at=datetime.now(UTC) if disabled else None)
        session.add(user)
        await session.flush()
        session.add(Membership(org_id=org_id, user_id=user.id, role=role))
        return user.id


async def login(client: httpx.AsyncClient, email: str, password: str, **extra: Any) -> httpx.Response:
    return await client.post("/api/v1/auth/token", json={"email": email, "password": password, **extra})


async def audit_rows(app: RunningApp, action: str) -> list[AuditEvent]:
    async with app.services.db.system_session() as session:
        return list(await session.scalars(select(AuditEvent).where(AuditEvent.action == action)
                                          .order_by(AuditEvent.id)))
