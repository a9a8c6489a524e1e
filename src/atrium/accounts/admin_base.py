"""The ground under ``atrium.accounts.admin``: its value types, the permission checks and the lookups
that scope every id to the actor's organisation (and division)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import Select, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from atrium.accounts.audit import record
from atrium.accounts.passwords import Passwords
from atrium.accounts.principal import ROLE_RANK, Principal, Role
from atrium.errors import Conflict, Forbidden, InvalidRequest, NotFound
from atrium.store.models import (
    ApiKey,
    Division,
    Membership,
    User,
    utcnow,
)

SERVICE_EMAIL_DOMAIN = "service.local"
SERVICE_ROLES: tuple[Role, ...] = ("viewer", "member", "admin")
MAX_KEY_LIFETIME = timedelta(days=3650)
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")
T = TypeVar("T")
Row = TypeVar("Row")


@dataclass(frozen=True, slots=True)
class Member:
    """A user as seen from one organisation: the account and its membership there."""

    user: User
    membership: Membership


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new key row and its raw value, which exists only here and in the one response that shows it."""

    row: ApiKey
    raw: str


@dataclass(frozen=True, slots=True)
class KeySpec:
    name: str
    role: Role | None = None
    user_id: str | None = None
    service_account: bool = False  # ``user_id`` names a service account
    division_id: str | None = None
    expires_at: datetime | None = None
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None


@dataclass(frozen=True, slots=True)
class UserChanges:
    """Fields of a PATCH; ``division_id`` applies only when ``set_division`` (so ``None`` can clear it)."""

    name: str | None = None
    role: Role | None = None
    division_id: str | None = None
    set_division: bool = False
    disabled: bool | None = None
    password: str | None = None


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: list[T]
    next_offset: int | None


def normalize_email(email: str) -> str:
    email = email.strip().lower()
    if not _EMAIL.match(email):
        raise InvalidRequest("email: not an email address.")
    return email


def aware(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def rank(role: str) -> int:
    return ROLE_RANK[role]


def lower_role(first: str, second: str) -> Role:
    """The lower of two stored roles."""
    return cast(Role, first if rank(first) <= rank(second) else second)


async def paged(session: AsyncSession, query: Select[T], limit: int, offset: int) -> Page[T]:
    rows = list((await session.scalars(query.limit(limit + 1).offset(offset))).all())
    return Page(rows[:limit], offset + limit if len(rows) > limit else None)


class AdminBase:
    """Acting as ``actor`` in ``session``'s transaction (a system-scope one: see ``atrium.accounts.admin``).
    ``passwords`` hashes new passwords; ``ip`` goes to the audit rows."""

    def __init__(self, session: AsyncSession, actor: Principal, *, passwords: Passwords,
                 ip: str | None = None) -> None:
        self.session = session
        self.actor = actor
        self.passwords = passwords
        self.ip = ip
        self.stale_keys: list[str] = []
        self.stale_users: list[str] = []

    # -- checks ------------------------------------------------------------------------------------

    def _tenant(self, org_id: str, *, org_wide: bool = False) -> None:
        """The actor administers only its own organisation, as an admin (``org_wide``: unscoped)."""
        if not self.actor.has_role("admin"):
            raise Forbidden("This needs the admin role.")
        if org_id != self.actor.org_id:
            raise NotFound("No such organisation.")
        if org_wide and self.actor.division_id is not None:
            raise Forbidden("A division-scoped credential cannot do this: it needs an organisation-wide one.")

    def _grantable(self, role: str) -> None:
        if role == "owner" and self.actor.role != "owner":
            raise Forbidden("Only an owner can grant or revoke the owner role.")
        if rank(role) > rank(self.actor.role):
            raise Forbidden(f"You cannot grant the {role} role: it is above yours.")

    def _may_change(self, member: Member) -> None:
        if member.membership.role == "owner" and self.actor.role != "owner":
            raise Forbidden("Only an owner can change an owner.")

    def _division_for(self, requested: str | None) -> str | None:
        """The division a new membership or key gets: a division-scoped actor's own, and no other."""
        scope = self.actor.division_id
        if scope is None:
            return requested
        if requested is not None and requested != scope:
            raise Forbidden("A division-scoped credential can only act inside its own division.")
        return scope

    async def _audit(self, action: str, org_id: str, *, target_type: str, target_id: str | None,
                     **details: Any) -> None:
        await record(self.session, action, actor=self.actor, org_id=org_id, target_type=target_type,
                     target_id=target_id, details={**details, "via": self.actor.via}, ip=self.ip)

    async def _ensure_owner_remains(self, org_id: str, leaving_user_id: str) -> None:
        """Refuse a change that would leave ``org_id`` without an active owner besides ``leaving_user_id``."""
        others = await self.session.scalar(
            select(func.count()).select_from(Membership).join(User, User.id == Membership.user_id)
            .where(Membership.org_id == org_id, Membership.role == "owner", Membership.user_id != leaving_user_id,
                   User.disabled_at.is_(None)))
        if not others:
            raise Conflict("An organisation must keep at least one active owner.")

    async def _revoke_where(self, *conditions: Any) -> int:
        """Revoke the active keys matching ``conditions``; they become stale in every cache."""
        keys = (await self.session.scalars(select(ApiKey).where(ApiKey.revoked_at.is_(None), *conditions))).all()
        now = utcnow()
        for key in keys:
            key.revoked_at = now
            self.stale_keys.append(key.id)
        return len(keys)

    # -- lookups (scoped: another tenant's id, or one outside the actor's division, is not found) ----

    async def _division(self, org_id: str, division_id: str) -> Division:
        division = await self.session.scalar(
            select(Division).where(Division.org_id == org_id, Division.id == division_id))
        if division is None or (self.actor.division_id is not None and division.id != self.actor.division_id):
            raise NotFound("No such division.")
        return division

    def _members(self, org_id: str) -> Select[User, Membership]:
        query = (select(User, Membership).join(Membership, Membership.user_id == User.id)
                 .where(Membership.org_id == org_id))
        if self.actor.division_id is not None:
            query = query.where(Membership.division_id == self.actor.division_id)
        return query

    async def _member(self, org_id: str, user_id: str) -> Member:
        row = (await self.session.execute(self._members(org_id).where(User.id == user_id))).first()
        if row is None:
            raise NotFound("No such user.")
        return Member(row[0], row[1])

    async def member_by_email(self, org_id: str, email: str) -> Member:
        self._tenant(org_id)
        row = (await self.session.execute(
            self._members(org_id).where(User.email == normalize_email(email)))).first()
        if row is None:
            raise NotFound("No such user in this organisation.")
        return Member(row[0], row[1])

    async def _in_scope(self, query: Select[Row], division: InstrumentedAttribute[str | None], missing: str) -> Row:
        """The one row ``query`` finds within the actor's division (``division``: the row's division
        column), if the actor is scoped to one; else ``NotFound(missing)``."""
        if self.actor.division_id is not None:
            query = query.where(division == self.actor.division_id)
        row = await self.session.scalar(query)
        if row is None:
            raise NotFound(missing)
        return row

    async def _key(self, org_id: str, key_id: str) -> ApiKey:
        return await self._in_scope(select(ApiKey).where(ApiKey.org_id == org_id, ApiKey.id == key_id),
                                    ApiKey.division_id, "No such API key.")

    async def _flush_unique(self, message: str) -> None:
        try:
            await self.session.flush()
        except IntegrityError as exc:
            raise Conflict(message) from exc
