"""First start: create the admin organisation, user and API key when the database has none; and the
anonymous caller of local development, a member of that first organisation."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from atrium.accounts.api_keys import create_key
from atrium.accounts.principal import Principal
from atrium.errors import Unauthorized
from atrium.store.engine import Database
from atrium.store.models import Membership, Organization, User


@dataclass(frozen=True, slots=True)
class BootstrapResult:
    org_id: str
    user_id: str
    raw_key: str | None  # set only when a key was generated here and must be shown once


async def ensure_admin(db: Database, *, preset_key: str | None) -> BootstrapResult | None:
    """Create the admin org, user and key if no organisation exists yet; otherwise do nothing."""
    async with db.system_session() as session:
        if await session.scalar(select(func.count()).select_from(Organization)):
            return None
        org = Organization(name="Admin")
        session.add(org)
        await session.flush()
        user = User(org_id=org.id, email="admin@localhost", name="Administrator", role="owner")
        session.add(user)
        await session.flush()
        session.add(Membership(org_id=org.id, user_id=user.id, role="owner"))
        _, raw = await create_key(session, org_id=org.id, user_id=user.id, role="owner",
                                  name="bootstrap admin key", raw_key=preset_key)
        return BootstrapResult(org_id=org.id, user_id=user.id, raw_key=None if preset_key else raw)


async def anonymous_member(db: Database) -> Principal:
    """Local development only (``auth.allow_anonymous``): act as a member of the first organisation."""
    async with db.system_session() as session:
        org_id = await session.scalar(select(Organization.id).order_by(Organization.created_at).limit(1))
    if org_id is None:
        raise Unauthorized("No organisation exists yet.")
    return Principal(org_id=org_id, user_id=None, role="member", via="anonymous")
