"""Onboarding a new member: the account use cases behind the ``onboarding`` guided flow.

Who: an organisation's admin (a division-scoped admin: into its division) makes the account of a new
member of its organisation, as ``POST /api/v1/admin/users`` does; Atrium has no anonymous self sign-up
(a user of another organisation joins by invitation, ``atrium.accounts.invitations``). Like any sign-up
form, the flow tells whether an email or a username is taken (the admin account API does too; an
invitation never does).

The password arrives hashed (the flow hashes it the moment it is answered), so it is never held in
clear anywhere the flow keeps state.
"""

from __future__ import annotations

from sqlalchemy import func, select

from atrium.accounts.admin_base import Member
from atrium.accounts.principal import Principal
from atrium.accounts.service import Accounts
from atrium.errors import Conflict
from atrium.store.models import User

USERNAME_PATTERN = r"[a-z0-9][a-z0-9_.-]{2,29}"
USERNAME_RULE = ("3 to 30 characters: lowercase letters, digits, '.', '_' or '-', starting with a letter or "
                 "a digit.")


async def email_registered(accounts: Accounts, email: str) -> bool:
    """Whether an account (of any organisation: emails are unique) holds ``email``."""
    async with accounts.db.system_session() as session:
        return await session.scalar(select(User.id).where(User.email == email.strip().lower())) is not None


async def username_taken(accounts: Accounts, username: str) -> bool:
    async with accounts.db.system_session() as session:
        return await session.scalar(
            select(User.id).where(func.lower(User.username) == username.strip().lower())) is not None


async def create_member(accounts: Accounts, actor: Principal, *, email: str, username: str, password_hash: str,
                        interests: list[str]) -> Member:
    """The new member's account (role ``member``; the actor's division when it is scoped to one); audited
    as ``user.create``. ``Forbidden`` for an actor below admin, ``Conflict`` if the email or the username
    was taken meanwhile."""
    if await username_taken(accounts, username):
        raise Conflict("This username was taken meanwhile.")
    async with accounts.administer(actor) as admin:
        return await admin.create_user(actor.org_id, email=email, name=username, role="member",
                                       password_hash=password_hash, username=username, interests=interests)
