"""Membership by invitation: an organisation offers a role to whoever holds an email, and nothing changes
until that user accepts.

* An admin invites an email (``InvitationAdmin.invite``, also what ``POST /api/v1/admin/memberships``
  does). The answer has the same shape and status whether or not a user holds the email, whether that
  user is active or disabled: an invitation never tells which emails exist. Only a user the inviting admin
  can already list (a member of the organisation, within the admin's division if scoped) is refused, as
  "already a member".
* The owner role is never offered: an organisation cannot make another organisation's user its owner.
  A division-scoped admin invites into its own division only.
* The invitee (``Invitee``: any credential of the user whose email the invitation names) lists its
  pending invitations, accepts one (which creates the membership, with the invited role and division) or
  declines it. An invitation that is not the caller's is "not found".
* Invitations expire after ``INVITATION_TTL``; an admin can revoke a pending one. A new invitation of the
  same email by the same scope supersedes (revokes) the older pending ones.

Every step is audited in the inviting organisation (``invitation.create``, ``invitation.revoke``,
``invitation.accept`` with ``membership.add``, ``invitation.decline``). Like account administration,
these run in the system scope (invitations cross organisations) and every query names its organisation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.accounts.admin_base import SERVICE_EMAIL_DOMAIN, AdminBase, Page, aware, normalize_email, paged
from atrium.accounts.audit import record
from atrium.accounts.principal import Principal, Role
from atrium.errors import Conflict, Forbidden, InvalidRequest, NotFound
from atrium.store.engine import Database
from atrium.store.models import Division, Invitation, Membership, Organization, User, utcnow

if TYPE_CHECKING:
    from atrium.accounts.authenticate import Authenticator

INVITATION_TTL = timedelta(days=7)
STATUSES = ("pending", "accepted", "declined", "revoked", "expired")


def status_of(invitation: Invitation, now: datetime | None = None) -> str:
    """The stored status, or ``expired`` for a pending invitation past its expiry."""
    if invitation.status == "pending" and aware(invitation.expires_at) <= (now or utcnow()):
        return "expired"
    return invitation.status


def _iso(moment: datetime | None) -> str | None:
    return aware(moment).isoformat() if moment is not None else None


def invitation_view(invitation: Invitation) -> dict[str, Any]:
    """An invitation as the inviting organisation's admins see it (the same keys for every answer)."""
    return {"id": invitation.id, "email": invitation.email, "role": invitation.role,
            "division_id": invitation.division_id, "status": status_of(invitation),
            "created_at": _iso(invitation.created_at), "expires_at": _iso(invitation.expires_at),
            "answered_at": _iso(invitation.answered_at), "invited_by_user_id": invitation.invited_by_user_id,
            "invited_by_key_id": invitation.invited_by_key_id}


def inbox_view(invitation: Invitation, org_name: str, division_name: str | None) -> dict[str, Any]:
    """An invitation as its invitee sees it: which organisation offers what."""
    return {"id": invitation.id, "org_id": invitation.org_id, "org_name": org_name, "role": invitation.role,
            "division_id": invitation.division_id, "division_name": division_name,
            "status": status_of(invitation), "created_at": _iso(invitation.created_at),
            "expires_at": _iso(invitation.expires_at), "answered_at": _iso(invitation.answered_at)}


class InvitationAdmin(AdminBase):
    """The inviting organisation's side (admins; a division-scoped admin within its division)."""

    async def invite(self, org_id: str, *, email: str, role: Role, division_id: str | None = None) -> Invitation:
        """Offer ``role`` in ``org_id`` to whoever holds ``email`` (see the module docstring)."""
        self._tenant(org_id)
        email = normalize_email(email)
        if email.endswith("@" + SERVICE_EMAIL_DOMAIN):
            raise InvalidRequest(f"email: the domain {SERVICE_EMAIL_DOMAIN} is reserved for service accounts.")
        if role == "owner":
            raise Forbidden("The owner role cannot be offered by invitation: only a user whose home is this "
                            "organisation can become its owner.")
        self._grantable(role)
        division_id = self._division_for(division_id)
        if division_id is not None:
            await self._division(org_id, division_id)
        # Only what the actor can already list is refused: a member it administers.
        if (await self.session.execute(self._members(org_id).where(User.email == email))).first() is not None:
            raise Conflict("This user is already a member of the organisation.")
        now = utcnow()
        older = select(Invitation).where(Invitation.org_id == org_id, Invitation.email == email,
                                         Invitation.status == "pending")
        if self.actor.division_id is not None:
            older = older.where(Invitation.division_id == self.actor.division_id)
        superseded = []
        for previous in (await self.session.scalars(older)).all():
            previous.status = "revoked"
            superseded.append(previous.id)
        invitation = Invitation(org_id=org_id, email=email, role=role, division_id=division_id,
                                invited_by_user_id=self.actor.user_id, invited_by_key_id=self.actor.api_key_id,
                                status="pending", created_at=now, expires_at=now + INVITATION_TTL)
        self.session.add(invitation)
        await self.session.flush()
        await self._audit("invitation.create", org_id, target_type="invitation", target_id=invitation.id,
                          email=email, role=role, division_id=division_id, superseded=superseded)
        return invitation

    async def list_invitations(self, org_id: str, *, status: str | None, limit: int,
                               offset: int) -> Page[Invitation]:
        """The organisation's invitations, newest first (a division-scoped admin: its division's)."""
        self._tenant(org_id)
        query = select(Invitation).where(Invitation.org_id == org_id)
        if self.actor.division_id is not None:
            query = query.where(Invitation.division_id == self.actor.division_id)
        now = utcnow()
        if status == "expired":
            query = query.where(Invitation.status == "pending", Invitation.expires_at <= now)
        elif status == "pending":
            query = query.where(Invitation.status == "pending", Invitation.expires_at > now)
        elif status is not None:
            query = query.where(Invitation.status == status)
        return await paged(self.session, query.order_by(Invitation.created_at.desc(), Invitation.id), limit,
                           offset)

    async def revoke_invitation(self, org_id: str, invitation_id: str) -> Invitation:
        """Withdraw a pending (or expired) invitation; revoking a revoked one changes nothing."""
        self._tenant(org_id)
        invitation = await self._in_scope(
            select(Invitation).where(Invitation.org_id == org_id, Invitation.id == invitation_id),
            Invitation.division_id, "No such invitation.")
        if invitation.status in ("accepted", "declined"):
            raise Conflict(f"The invitation was already {invitation.status}.")
        if invitation.status == "pending":
            invitation.status = "revoked"
            await self._audit("invitation.revoke", org_id, target_type="invitation", target_id=invitation.id,
                              email=invitation.email, role=invitation.role)
            await self.session.flush()
        return invitation


class Invitee:
    """The invited user's side: any credential of a user (an access token, or a key with a user)."""

    def __init__(self, session: AsyncSession, actor: Principal, *, ip: str | None = None) -> None:
        self.session = session
        self.actor = actor
        self.ip = ip
        self.stale_users: list[str] = []

    async def _user(self) -> User:
        if self.actor.user_id is None:
            raise Forbidden("This credential belongs to no user: invitations are for users.")
        user = await self.session.get(User, self.actor.user_id)
        if user is None or user.disabled_at is not None or user.is_service:
            raise Forbidden("This user cannot answer invitations.")
        return user

    async def mine(self) -> list[tuple[Invitation, str, str | None]]:
        """The caller's pending invitations, newest first, with the inviting organisation's name and the
        division's."""
        user = await self._user()
        rows = (await self.session.execute(
            select(Invitation, Organization.name, Division.name)
            .join(Organization, Organization.id == Invitation.org_id)
            .outerjoin(Division, Division.id == Invitation.division_id)
            .where(Invitation.email == user.email, Invitation.status == "pending",
                   Invitation.expires_at > utcnow())
            .order_by(Invitation.created_at.desc(), Invitation.id).limit(200))).all()
        return [(invitation, org_name, division_name) for invitation, org_name, division_name in rows]

    async def _pending(self, user: User, invitation_id: str) -> Invitation:
        invitation = await self.session.scalar(
            select(Invitation).where(Invitation.id == invitation_id, Invitation.email == user.email))
        if invitation is None:
            raise NotFound("No such invitation.")
        status = status_of(invitation)
        if status != "pending":
            raise Conflict(f"The invitation is {status}.")
        return invitation

    async def _close(self, invitation: Invitation, status: str) -> None:
        """Move the invitation from pending to ``status`` (one conditional update: answering twice at once
        cannot both win)."""
        closed = await self.session.execute(
            update(Invitation).where(Invitation.id == invitation.id, Invitation.status == "pending")
            .values(status=status, answered_at=utcnow()))
        if getattr(closed, "rowcount", 0) != 1:
            raise Conflict("The invitation was answered or revoked meanwhile.")
        await self.session.refresh(invitation)

    async def accept(self, invitation_id: str) -> tuple[Invitation, Membership]:
        """Join the inviting organisation with the invited role and division."""
        user = await self._user()
        invitation = await self._pending(user, invitation_id)
        if await self.session.scalar(select(Membership.id).where(
                Membership.org_id == invitation.org_id, Membership.user_id == user.id)) is not None:
            raise Conflict("You are already a member of this organisation.")
        await self._close(invitation, "accepted")
        membership = Membership(org_id=invitation.org_id, user_id=user.id, division_id=invitation.division_id,
                                role=invitation.role)
        self.session.add(membership)
        try:
            await self.session.flush()
        except IntegrityError as exc:
            raise Conflict("You are already a member of this organisation.") from exc
        await self._audit("invitation.accept", invitation)
        await record(self.session, "membership.add", actor=self.actor, org_id=invitation.org_id,
                     target_type="user", target_id=user.id, ip=self.ip,
                     details={"role": invitation.role, "division_id": invitation.division_id,
                              "invitation_id": invitation.id, "via": self.actor.via})
        self.stale_users.append(user.id)
        return invitation, membership

    async def decline(self, invitation_id: str) -> Invitation:
        user = await self._user()
        invitation = await self._pending(user, invitation_id)
        await self._close(invitation, "declined")
        await self._audit("invitation.decline", invitation)
        return invitation

    async def _audit(self, action: str, invitation: Invitation) -> None:
        await record(self.session, action, actor=self.actor, org_id=invitation.org_id, target_type="invitation",
                     target_id=invitation.id, ip=self.ip,
                     details={"user_id": self.actor.user_id, "role": invitation.role,
                              "division_id": invitation.division_id, "via": self.actor.via})


@asynccontextmanager
async def answering(db: Database, authenticator: Authenticator, actor: Principal, *,
                    ip: str | None = None) -> AsyncIterator[Invitee]:
    """An ``Invitee`` in a new transaction; once it has committed, a user who joined an organisation is
    announced to every replica (a refusal cached for their credentials there is dropped)."""
    async with db.system_session() as session:
        invitee = Invitee(session, actor, ip=ip)
        yield invitee
    for user_id in dict.fromkeys(invitee.stale_users):
        await authenticator.announce_user_changed(user_id)
