"""A user's standing in an organisation: the role and division of their membership there, read from the
database per request (through the caches of ``atrium.accounts.authenticate``), never trusted from a token.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.accounts.principal import ROLE_RANK, Role
from atrium.store.models import Membership, User


@dataclass(frozen=True, slots=True)
class Standing:
    """What a user may do in one organisation now: their membership's role and division."""

    role: Role
    division_id: str | None


async def read_standing(session: AsyncSession, user_id: str, org_id: str) -> Standing | None:
    """The user's current role and division in ``org_id`` (their membership there; for their home
    organisation without one, their home role, as at login), or None when they are disabled, a service
    account, gone, or not a member."""
    found = (await session.execute(
        select(User.org_id, User.role, User.disabled_at, User.is_service, Membership.role.label("seat_role"),
               Membership.division_id)
        .outerjoin(Membership, and_(Membership.user_id == User.id, Membership.org_id == org_id))
        .where(User.id == user_id))).first()
    if found is None or found.disabled_at is not None or found.is_service:
        return None
    if found.seat_role is not None:
        return Standing(found.seat_role, found.division_id) if found.seat_role in ROLE_RANK else None
    if found.org_id == org_id and found.role in ROLE_RANK:
        return Standing(found.role, None)
    return None
