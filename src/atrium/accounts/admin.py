"""Account administration: organisations, divisions, users, memberships, service accounts, API keys and
the audit trail, as use cases shared by the admin REST API and the ``atrium users`` / ``atrium keys`` CLI.

``AccountAdmin`` acts as one Principal inside one transaction; the tenant (``org_id``) is an explicit
argument of every method and must be the actor's own organisation. Every change writes its audit row in
the same transaction. The rules (see docs/accounts.md):

* viewers and members administer nothing; admins manage their organisation's divisions, users,
  memberships, service accounts and keys; only an owner grants or revokes the owner role or changes an
  owner, and only to a user whose home is the organisation; no change may leave an organisation without
  an active owner (disabling or deleting a user checks their home organisation only: another
  organisation where they hold a seat cannot block it);
* users of other organisations join by invitation only (``atrium.accounts.invitations``): an
  organisation never adds another's user by itself, and never tells which emails exist;
* nothing is granted above the actor's own role (a key's role is also capped by its user's role);
* an actor scoped to a division (a division key) administers only that division: its keys, and the users
  and service accounts whose membership is in it; organisation-wide actions need an unscoped actor;
* the "platform admin" (an unscoped owner of the first organisation) also creates and lists organisations;
* an object of another organisation is "not found", never "forbidden": ids of other tenants reveal nothing.

Accounts are where tenants meet: a user's row lives in its home organisation while its memberships
point at others. Under Row-Level Security a tenant session could not see a member whose home is another
organisation, so these use cases run in the system scope and every query names its organisation itself
(``tests/api/test_accounts_api.py`` checks that each path answers 404 for another tenant's ids).

Keys that were revoked (or rotated) are collected in ``stale_keys``,
users whose standing changed (role, division, membership removed, disabled, enabled or deleted) in
``stale_users``; ``administer`` announces both to every replica once the transaction has committed, so
the change takes effect on every replica's next request, whatever token the user holds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import func, select, update

from atrium.accounts.admin_base import (
    SERVICE_EMAIL_DOMAIN,
    SERVICE_ROLES,
    CreatedKey,
    KeySpec,
    Member,
    Page,
    UserChanges,
    normalize_email,
    paged,
    rank,
)
from atrium.accounts.authenticate import Authenticator
from atrium.accounts.invitations import InvitationAdmin
from atrium.accounts.key_admin import KeyAdmin
from atrium.accounts.passwords import Passwords
from atrium.accounts.principal import Principal, Role
from atrium.errors import Conflict, Forbidden, InvalidRequest, NotFound
from atrium.store.engine import Database
from atrium.store.models import (
    ApiKey,
    AuditEvent,
    Division,
    Invitation,
    Membership,
    Organization,
    RefreshToken,
    User,
    new_id,
    utcnow,
)

__all__ = ["AccountAdmin", "CreatedKey", "KeySpec", "Member", "Page", "UserChanges", "administer"]


class AccountAdmin(InvitationAdmin, KeyAdmin):
    """The account use cases (see the module docstring for the rules they enforce); invitations and API
    keys come from ``InvitationAdmin`` and ``KeyAdmin``."""

    # -- organisations -------------------------------------------------------------------------------

    async def is_platform_admin(self) -> bool:
        """An unscoped owner of the first organisation (the one the first start created)."""
        if self.actor.role != "owner" or self.actor.division_id is not None:
            return False
        first = await self.session.scalar(
            select(Organization.id).order_by(Organization.created_at, Organization.id).limit(1))
        return first == self.actor.org_id

    async def _require_platform_admin(self) -> None:
        if not await self.is_platform_admin():
            raise Forbidden("Only an owner of the platform's first organisation can do this.")

    async def get_org(self, org_id: str) -> Organization:
        if org_id != self.actor.org_id:
            raise NotFound("No such organisation.")
        org = await self.session.get(Organization, org_id)
        if org is None:
            raise NotFound("No such organisation.")
        return org

    async def create_org(self, name: str, *, owner_key: bool = False) -> tuple[Organization, CreatedKey | None]:
        """A new organisation whose owner is the acting user (with an owner key for it if ``owner_key``)."""
        await self._require_platform_admin()
        creator = self.actor.user_id
        if creator is None:
            raise InvalidRequest("Only a user can create an organisation: it becomes the new one's owner.")
        org = Organization(name=name)
        self.session.add(org)
        await self.session.flush()
        self.session.add(Membership(org_id=org.id, user_id=creator, role="owner"))
        await self._audit("org.create", self.actor.org_id, target_type="organization", target_id=org.id, name=name)
        await self._audit("membership.add", org.id, target_type="user", target_id=creator, role="owner")
        created = None
        if owner_key:
            created = await self._store_key(org.id, KeySpec(name=f"owner key for {name}"[:200]), creator, "owner",
                                            None)
        await self.session.flush()
        return org, created

    async def list_orgs(self, *, limit: int, offset: int) -> Page[Organization]:
        await self._require_platform_admin()
        return await paged(self.session, select(Organization).order_by(Organization.created_at, Organization.id),
                            limit, offset)

    # -- divisions -----------------------------------------------------------------------------------

    async def find_division(self, org_id: str, ref: str) -> Division:
        """A division of ``org_id`` by id or by name (for the CLI's ``--division``)."""
        self._tenant(org_id)
        division = await self.session.scalar(select(Division).where(
            Division.org_id == org_id, (Division.id == ref) | (Division.name == ref)))
        if division is None:
            raise NotFound(f"No division {ref!r} in this organisation.")
        return await self._division(org_id, division.id)

    async def create_division(self, org_id: str, name: str) -> Division:
        self._tenant(org_id, org_wide=True)
        if await self.session.scalar(select(Division.id).where(Division.org_id == org_id, Division.name == name)):
            raise Conflict("A division with this name exists.")
        division = Division(org_id=org_id, name=name)
        self.session.add(division)
        await self._flush_unique("A division with this name exists.")
        await self._audit("division.create", org_id, target_type="division", target_id=division.id, name=name)
        return division

    async def list_divisions(self, org_id: str, *, limit: int, offset: int) -> Page[Division]:
        self._tenant(org_id)
        query = select(Division).where(Division.org_id == org_id).order_by(Division.name, Division.id)
        if self.actor.division_id is not None:
            query = query.where(Division.id == self.actor.division_id)
        return await paged(self.session, query, limit, offset)

    async def delete_division(self, org_id: str, division_id: str) -> None:
        """Refused while memberships or live keys are scoped to it: deleting would widen them org-wide."""
        self._tenant(org_id, org_wide=True)
        division = await self._division(org_id, division_id)
        members = await self.session.scalar(
            select(func.count()).select_from(Membership).where(Membership.division_id == division.id))
        keys = await self.session.scalar(
            select(func.count()).select_from(ApiKey).where(
                ApiKey.division_id == division.id, ApiKey.revoked_at.is_(None),
                (ApiKey.expires_at.is_(None)) | (ApiKey.expires_at > utcnow())))
        if members or keys:
            raise Conflict(f"The division still has {members} members and {keys} live API keys: move the members "
                           "and revoke the keys first.")
        await self.session.delete(division)
        await self._audit("division.delete", org_id, target_type="division", target_id=division.id,
                          name=division.name)

    # -- users and memberships -----------------------------------------------------------------------

    async def create_user(self, org_id: str, *, email: str, name: str, role: Role, password: str | None = None,
                          division_id: str | None = None, password_hash: str | None = None,
                          username: str | None = None, interests: list[str] | None = None) -> Member:
        """A new account (``password``, or its ``password_hash`` when the caller hashed it already)."""
        self._tenant(org_id)
        email = normalize_email(email)
        if email.endswith("@" + SERVICE_EMAIL_DOMAIN):
            raise InvalidRequest(f"email: the domain {SERVICE_EMAIL_DOMAIN} is reserved for service accounts.")
        self._grantable(role)
        division_id = self._division_for(division_id)
        if division_id is not None:
            await self._division(org_id, division_id)
        # Like any sign-up form, creating an account tells that an email is taken (emails are unique);
        # an invitation (POST /api/v1/admin/invitations) never does.
        if await self.session.scalar(select(User.id).where(User.email == email)):
            raise Conflict("This email is already taken by an account. To give its user a role here, invite "
                           "the email: POST /api/v1/admin/invitations.")
        if password:
            password_hash = await self.passwords.hash(password)
        user = User(id=new_id(), org_id=org_id, email=email, name=name, role=role, username=username,
                    interests=interests, password_hash=password_hash)
        membership = Membership(org_id=org_id, user_id=user.id, division_id=division_id, role=role)
        self.session.add(user)
        await self._flush_unique("This email is already taken by an account.")
        self.session.add(membership)
        await self.session.flush()
        await self._audit("user.create", org_id, target_type="user", target_id=user.id, email=email, role=role,
                          division_id=division_id)
        return Member(user, membership)

    async def create_service_account(self, org_id: str, *, name: str, role: Role,
                                     division_id: str | None = None) -> Member:
        """A user that only ever authenticates with API keys; it cannot be an owner."""
        self._tenant(org_id)
        if role not in SERVICE_ROLES:
            raise InvalidRequest("role: a service account can be a viewer, member or admin.")
        self._grantable(role)
        division_id = self._division_for(division_id)
        if division_id is not None:
            await self._division(org_id, division_id)
        user_id = new_id()
        user = User(id=user_id, org_id=org_id, email=f"svc-{user_id}@{SERVICE_EMAIL_DOMAIN}", name=name,
                    role=role, is_service=True)
        membership = Membership(org_id=org_id, user_id=user_id, division_id=division_id, role=role)
        self.session.add(user)
        await self.session.flush()
        self.session.add(membership)
        await self.session.flush()
        await self._audit("service_account.create", org_id, target_type="user", target_id=user_id, name=name,
                          role=role, division_id=division_id)
        return Member(user, membership)

    async def list_users(self, org_id: str, *, service: bool, limit: int, offset: int) -> Page[Member]:
        self._tenant(org_id)
        query = (self._members(org_id).where(User.is_service.is_(service))
                 .order_by(User.created_at, User.id).limit(limit + 1).offset(offset))
        rows = (await self.session.execute(query)).all()
        return Page([Member(user, membership) for user, membership in rows[:limit]],
                    offset + limit if len(rows) > limit else None)

    async def get_user(self, org_id: str, user_id: str) -> Member:
        self._tenant(org_id)
        return await self._member(org_id, user_id)

    async def update_user(self, org_id: str, user_id: str, changes: UserChanges) -> Member:
        self._tenant(org_id)
        member = await self._member(org_id, user_id)
        user, membership = member.user, member.membership
        self._may_change(member)
        home = user.org_id == org_id
        if (changes.name is not None or changes.password is not None or changes.disabled is not None) and not home:
            raise Forbidden("Only the user's home organisation can change their name, password or status.")
        if changes.password is not None and user.is_service:
            raise InvalidRequest("password: a service account has no password; it uses API keys.")
        # Hashed before anything is written, so the transaction holds no write lock while argon2 runs.
        password_hash = await self.passwords.hash(changes.password) if changes.password is not None else None
        updated: list[str] = []
        if changes.role is not None and changes.role != membership.role:
            await self._change_role(org_id, member, changes.role)
        if changes.set_division:
            division_id = self._division_for(changes.division_id)
            if division_id != membership.division_id:
                if division_id is not None:
                    await self._division(org_id, division_id)
                    # The user's keys here move with them (a key never acts outside its user's division).
                    await self.session.execute(
                        update(ApiKey).where(ApiKey.org_id == org_id, ApiKey.user_id == user.id,
                                             ApiKey.revoked_at.is_(None)).values(division_id=division_id))
                membership.division_id = division_id
                self.stale_users.append(user.id)
                updated.append("division_id")
        if changes.name is not None and changes.name != user.name:
            user.name = changes.name
            updated.append("name")
        if password_hash is not None:
            user.password_hash = password_hash
            await self._end_sessions(user.id)
            updated.append("password_reset")
        if updated:
            await self._audit("user.update", org_id, target_type="user", target_id=user.id, fields=updated,
                              division_id=membership.division_id)
        if changes.disabled is not None and changes.disabled != (user.disabled_at is not None):
            # Key lookups refuse a disabled user's keys; they work again if the user is enabled again.
            keys = (await self.session.scalars(
                select(ApiKey.id).where(ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None)))).all()
            if changes.disabled:
                if membership.role == "owner":  # the home organisation's rule only
                    await self._ensure_owner_remains(org_id, user.id)
                await self._end_sessions(user.id)
            self.stale_users.append(user.id)
            user.disabled_at = utcnow() if changes.disabled else None
            await self._audit("user.disable" if changes.disabled else "user.enable", org_id, target_type="user",
                              target_id=user.id, keys=len(keys))
        await self.session.flush()
        return member

    async def _end_sessions(self, user_id: str, org_id: str | None = None) -> None:
        """Revoke the user's refresh tokens (in ``org_id`` only, if given): after a password reset, a
        disable or a removal, the next session needs a new login."""
        query = update(RefreshToken).where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        if org_id is not None:
            query = query.where(RefreshToken.org_id == org_id)
        await self.session.execute(query.values(revoked_at=utcnow()))

    async def _change_role(self, org_id: str, member: Member, role: Role) -> None:
        """Change the membership role; keys of the user that now rank above it are lowered to it."""
        user, membership = member.user, member.membership
        if user.is_service and role not in SERVICE_ROLES:
            raise InvalidRequest("role: a service account can be a viewer, member or admin.")
        self._grantable(role)
        if role == "owner" and user.org_id != org_id:
            raise Forbidden("Only a user whose home is this organisation can become its owner.")
        old = membership.role
        if old == "owner":
            await self._ensure_owner_remains(org_id, user.id)
        membership.role = role
        if user.org_id == org_id:
            user.role = role
        capped = 0
        keys = await self.session.scalars(select(ApiKey).where(
            ApiKey.org_id == org_id, ApiKey.user_id == user.id, ApiKey.revoked_at.is_(None)))
        for key in keys.all():
            if rank(key.role) > rank(role):
                key.role = role
                capped += 1
        # Announced as a changed user, not as revoked keys: every replica drops the user's cached keys and
        # standing, and the lowered keys keep working with their new role.
        self.stale_users.append(user.id)
        await self._audit("role.change", org_id, target_type="user", target_id=user.id, old_role=old, new_role=role,
                          keys_lowered=capped)

    async def delete_user(self, org_id: str, user_id: str) -> str:
        """In the user's home organisation: delete the account (everywhere). Elsewhere: remove the user
        from this organisation. Returns ``"deleted"`` or ``"removed"``."""
        self._tenant(org_id)
        member = await self._member(org_id, user_id)
        if member.user.org_id != org_id:
            await self.remove_membership(org_id, user_id)
            return "removed"
        self._may_change(member)
        if member.membership.role == "owner":  # the home organisation's rule only
            await self._ensure_owner_remains(org_id, user_id)
        keys = await self.session.scalar(select(func.count()).select_from(ApiKey).where(
            ApiKey.user_id == user_id, ApiKey.revoked_at.is_(None)))
        self.stale_users.append(user_id)
        await self._audit("user.delete", org_id, target_type="user", target_id=user_id, email=member.user.email,
                          keys_deleted=keys)
        # Memberships, keys and refresh tokens go with the account (foreign keys cascade).
        await self.session.delete(member.user)
        await self.session.flush()
        return "deleted"

    async def add_membership(self, org_id: str, *, email: str, role: Role,
                             division_id: str | None = None) -> Invitation:
        """Offer a role in this organisation to whoever holds ``email``: an invitation they accept (see
        ``atrium.accounts.invitations``); the same answer whether or not the email has an account."""
        return await self.invite(org_id, email=email, role=role, division_id=division_id)

    async def remove_membership(self, org_id: str, user_id: str) -> None:
        """Remove a user from this organisation (not their home one); their keys and sessions here end."""
        self._tenant(org_id)
        member = await self._member(org_id, user_id)
        if member.user.org_id == org_id:
            raise Conflict("This is the user's home organisation: delete or disable the user instead.")
        self._may_change(member)
        if member.membership.role == "owner":
            await self._ensure_owner_remains(org_id, user_id)
        revoked = await self._revoke_where(ApiKey.org_id == org_id, ApiKey.user_id == user_id)
        await self._end_sessions(user_id, org_id)
        await self.session.delete(member.membership)
        self.stale_users.append(user_id)
        await self._audit("membership.remove", org_id, target_type="user", target_id=user_id,
                          role=member.membership.role, keys_revoked=revoked)
        await self.session.flush()

    # -- audit ---------------------------------------------------------------------------------------

    async def list_audit(self, org_id: str, *, action: str | None, before: int | None,
                         limit: int) -> tuple[list[AuditEvent], int | None]:
        """The organisation's audit rows, newest first; ``action`` is exact or a prefix ending in ``.*``;
        ``before`` is the cursor (an event id). Returns the rows and the next cursor."""
        self._tenant(org_id, org_wide=True)
        query = select(AuditEvent).where(AuditEvent.org_id == org_id).order_by(AuditEvent.id.desc())
        if action is not None:
            query = (query.where(AuditEvent.action.startswith(action[:-1], autoescape=True))
                     if action.endswith(".*") else query.where(AuditEvent.action == action))
        if before is not None:
            query = query.where(AuditEvent.id < before)
        rows = list((await self.session.scalars(query.limit(limit + 1))).all())
        return rows[:limit], rows[limit - 1].id if len(rows) > limit else None


@asynccontextmanager
async def administer(db: Database, authenticator: Authenticator, passwords: Passwords, actor: Principal, *,
                     ip: str | None = None) -> AsyncIterator[AccountAdmin]:
    """An ``AccountAdmin`` in a new transaction; once it has committed, every stale key and changed user is
    announced to every replica (announcing earlier could let a replica re-read and cache the old state
    before the commit)."""
    async with db.system_session() as session:
        admin = AccountAdmin(session, actor, passwords=passwords, ip=ip)
        yield admin
    for key_id in dict.fromkeys(admin.stale_keys):
        await authenticator.announce_revocation(key_id)
    for user_id in dict.fromkeys(admin.stale_users):
        await authenticator.announce_user_changed(user_id)
