"""Rotating refresh tokens on the ``refresh_tokens`` table.

A login starts a *family* (one session of one device). Each refresh token is an opaque random string
(``atrr_`` + 256 random bits); only its SHA-256 is stored. Every use rotates it: the row is marked used
(one conditional UPDATE, so two concurrent uses cannot both win) and a new token of the same family is
issued. Presenting a used token again means it was copied: the whole family is revoked, so the thief's
and the victim's newer tokens both stop working and the user must log in again. Logout revokes the
family; "log out everywhere" revokes every family of the user.

Lookups are by token hash, before any tenant is known (the token *is* the credential), like API keys.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.store.models import RefreshToken

TOKEN_PREFIX = "atrr_"
MAX_TOKEN_CHARS = 200


@dataclass(frozen=True, slots=True)
class IssuedRefreshToken:
    token: str  # shown to the client once, never stored
    expires_in: int
    family_id: str


class RefreshError(Exception):
    """The refresh token cannot be used. ``reused`` is set when it had been used already (its family
    is revoked by then); ``row`` is the token's row when one was found."""

    def __init__(self, reason: str, *, row: RefreshToken | None = None, reused: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.row = row
        self.reused = reused


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class RefreshTokens:
    """Issue, rotate and revoke refresh tokens inside the caller's transaction."""

    def __init__(self, *, ttl_s: int) -> None:
        self._ttl_s = ttl_s

    async def issue(self, session: AsyncSession, *, org_id: str, user_id: str, division_id: str | None,
                    family_id: str | None = None) -> IssuedRefreshToken:
        raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
        family = family_id or uuid.uuid4().hex
        session.add(RefreshToken(org_id=org_id, user_id=user_id, division_id=division_id, family_id=family,
                                 token_hash=hash_token(raw),
                                 expires_at=datetime.now(UTC) + timedelta(seconds=self._ttl_s)))
        await session.flush()
        return IssuedRefreshToken(raw, self._ttl_s, family)

    async def find(self, session: AsyncSession, raw: str) -> RefreshToken | None:
        if not raw.startswith(TOKEN_PREFIX) or len(raw) > MAX_TOKEN_CHARS:
            return None
        return await session.scalar(select(RefreshToken).where(RefreshToken.token_hash == hash_token(raw)))

    async def consume(self, session: AsyncSession, raw: str) -> RefreshToken:
        """Mark ``raw`` used and return its row, or raise ``RefreshError``. On reuse the family is revoked
        in ``session``: the caller must commit it (and audit it) before answering 401."""
        row = await self.find(session, raw)
        if row is None:
            raise RefreshError("unknown")
        if row.revoked_at is not None:
            raise RefreshError("revoked", row=row)
        now = datetime.now(UTC)
        if row.used_at is None and _aware(row.expires_at) <= now:
            raise RefreshError("expired", row=row)
        claimed = await session.execute(
            update(RefreshToken).where(RefreshToken.id == row.id, RefreshToken.used_at.is_(None),
                                       RefreshToken.revoked_at.is_(None)).values(used_at=now))
        if getattr(claimed, "rowcount", 0) != 1:
            await self.revoke_family(session, row.family_id)
            raise RefreshError("reused", row=row, reused=True)
        return row

    async def revoke_family(self, session: AsyncSession, family_id: str) -> int:
        result = await session.execute(
            update(RefreshToken).where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC)))
        return int(getattr(result, "rowcount", 0) or 0)

    async def revoke_user(self, session: AsyncSession, user_id: str) -> int:
        """Revoke every live family of ``user_id`` (in every organisation: it is the person who logs out
        everywhere); returns how many families were cut."""
        families = (await session.scalars(
            select(RefreshToken.family_id).where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
            .distinct())).all()
        if families:
            await session.execute(
                update(RefreshToken).where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC)))
        return len(families)
