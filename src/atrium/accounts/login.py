"""Password login and the session life cycle: log in, refresh, log out, log out everywhere.

A login checks the email and password (argon2, in a thread), picks one of the user's organisations and
answers an access token (JWT, minutes) with a rotating refresh token (days). Every outcome is audited
(``auth.login``, ``auth.refresh``, ``auth.refresh_reuse``, ``auth.logout``, ``auth.revoke``) without the
password or any token. Failed logins are throttled per email and every attempt per client IP (``limits``,
in Redis when configured, so the limit holds across replicas).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.storage import Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.accounts import audit
from atrium.accounts.passwords import Passwords
from atrium.accounts.principal import ROLE_RANK, Principal, Role
from atrium.accounts.refresh import RefreshError, RefreshTokens
from atrium.accounts.settings import AuthSettings
from atrium.accounts.tokens import AccessTokens
from atrium.errors import Forbidden, RateLimited, Unauthorized
from atrium.store.engine import Database
from atrium.store.models import Membership, User

log = logging.getLogger(__name__)

BAD_CREDENTIALS = "Invalid email or password."
BAD_REFRESH = "The refresh token is invalid, expired or revoked."


@dataclass(frozen=True, slots=True)
class TokenPair:
    """What a login or a refresh issues: an access token and a refresh token, with their lifetimes (s) and
    the seat (organisation, role, division) the access token acts in."""

    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    org_id: str
    role: Role
    division_id: str | None


@dataclass(frozen=True, slots=True)
class _Seat:
    """Where a user acts after login: an organisation, a role there and maybe a division."""

    org_id: str
    role: Role
    division_id: str | None


class LoginThrottle:
    """Per-email failures and per-IP attempts over a sliding minute, on the ``limits`` library.

    If the storage (Redis) fails, logins go on unthrottled (argon2 still bounds their rate) rather than
    failing, and the storage is left alone (and the outage logged) once per ``retry_s``."""

    def __init__(self, settings: AuthSettings, storage: Storage, *, retry_s: float = 5.0) -> None:
        self._limiter = SlidingWindowCounterRateLimiter(storage)
        self._per_email = (RateLimitItemPerMinute(settings.login_failures_per_minute_per_email)
                           if settings.login_failures_per_minute_per_email else None)
        self._per_ip = (RateLimitItemPerMinute(settings.login_attempts_per_minute_per_ip)
                        if settings.login_attempts_per_minute_per_ip else None)
        self._retry_s = retry_s
        self._down_until = 0.0

    async def admit(self, email: str, ip: str | None) -> None:
        """Count this attempt against the client IP; refuse if the IP or the email is over its limit."""
        if self._down():
            return
        try:
            ip_ok = self._per_ip is None or not ip or await self._limiter.hit(self._per_ip, "login-ip", ip)
            email_ok = self._per_email is None or await self._limiter.test(self._per_email, "login-email", email)
            if not ip_ok and self._per_ip is not None and ip:
                await self._refuse(self._per_ip, "login-ip", ip)
            if not email_ok and self._per_email is not None:
                await self._refuse(self._per_email, "login-email", email)
        except StorageError:
            self._storage_failed()

    async def failed(self, email: str) -> None:
        if self._per_email is None or self._down():
            return
        try:
            await self._limiter.hit(self._per_email, "login-email", email)
        except StorageError:
            self._storage_failed()

    def _down(self) -> bool:
        return time.monotonic() < self._down_until

    def _storage_failed(self) -> None:
        log.warning("login throttling storage failed; logins go unthrottled for %.0f s", self._retry_s)
        self._down_until = time.monotonic() + self._retry_s

    async def _refuse(self, item: RateLimitItem, scope: str, ident: str) -> None:
        stats = await self._limiter.get_window_stats(item, scope, ident)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(f"Too many login attempts; retry in {retry_after} s.", retry_after=retry_after)


class SessionService:
    """Login, refresh, logout and revoke-all; built once per process."""

    def __init__(self, db: Database, *, passwords: Passwords, access_tokens: AccessTokens,
                 refresh_tokens: RefreshTokens, throttle: LoginThrottle) -> None:
        self._db = db
        self.passwords = passwords
        self._access = access_tokens
        self._refresh = refresh_tokens
        self._throttle = throttle

    async def login(self, email: str, password: str, *, org_id: str | None = None, ip: str | None = None) -> TokenPair:
        email = email.strip().lower()
        await self._throttle.admit(email, ip)
        async with self._db.system_session() as session:
            user = await session.scalar(select(User).where(User.email == email))
        # Always verify (against a dummy hash when there is no user or no password): same work either way.
        matches = await self.passwords.verify(user.password_hash if user is not None else None, password)
        failure = ("unknown_email" if user is None else "no_password" if user.password_hash is None
                   else "wrong_password" if not matches
                   else "service_account" if user.is_service else "disabled" if user.disabled_at is not None
                   else None)
        if failure is not None or user is None:
            await self._throttle.failed(email)
            await self._audit_failure("auth.login", failure or "unknown_email", user, ip, email=email)
            raise Unauthorized(BAD_CREDENTIALS)
        async with self._db.system_session() as session:
            seat = await _seat(session, user, org_id or user.org_id)
            if seat is None:
                await audit.record(session, "auth.login", org_id=user.org_id, outcome="failure", ip=ip,
                                   actor=_actor(user.org_id, user.id),
                                   details={"reason": "not_member", "requested_org_id": (org_id or "")[:64]})
            else:
                pair = await self._issue(session, user.id, seat)
                await audit.record(session, "auth.login", ip=ip, target_type="user", target_id=user.id,
                                   actor=_principal(user.id, seat), details={"method": "password"})
        if seat is None:
            raise Forbidden("You are not a member of that organisation.")
        if self.passwords.needs_rehash(user.password_hash or ""):
            await self._rehash(user.id, password)
        return pair

    async def refresh(self, raw_token: str, *, ip: str | None = None) -> TokenPair:
        reused = None
        async with self._db.system_session() as session:
            try:
                row = await self._refresh.consume(session, raw_token)
            except RefreshError as error:
                if error.reused and error.row is not None:
                    reused = error.row
                    await audit.record(session, "auth.refresh_reuse", org_id=error.row.org_id, outcome="failure",
                                       ip=ip, target_type="refresh_family", target_id=error.row.family_id,
                                       actor=_actor(error.row.org_id, error.row.user_id),
                                       details={"reason": "reused; family revoked"})
                # commit the family revocation, then answer 401
            else:
                user = await session.get(User, row.user_id)
                seat = await _seat(session, user, row.org_id) if user is not None else None
                if user is None or seat is None or user.disabled_at is not None or user.is_service:
                    await self._refresh.revoke_family(session, row.family_id)
                else:
                    pair = await self._issue(session, user.id, seat, family_id=row.family_id)
                    await audit.record(session, "auth.refresh", ip=ip, actor=_principal(user.id, seat),
                                       target_type="refresh_family", target_id=row.family_id)
                    return pair
        if reused is not None:
            raise Unauthorized("The refresh token was already used; this session is revoked. Log in again.",
                               code="refresh_token_reused")
        raise Unauthorized(BAD_REFRESH)

    async def logout(self, raw_token: str, *, ip: str | None = None) -> bool:
        """Revoke the family of ``raw_token``; False if there was no such token."""
        async with self._db.system_session() as session:
            row = await self._refresh.find(session, raw_token)
            if row is None:
                return False
            await self._refresh.revoke_family(session, row.family_id)
            await audit.record(session, "auth.logout", org_id=row.org_id, ip=ip, target_type="refresh_family",
                               target_id=row.family_id,
                               actor=_actor(row.org_id, row.user_id))
            return True

    async def revoke_all(self, principal: Principal, *, ip: str | None = None) -> int:
        """Log the caller's user out everywhere: revoke every refresh-token family. Access tokens already
        issued live on until they expire (``auth.access_token_ttl_s``)."""
        if principal.user_id is None:
            raise Forbidden("This credential belongs to no user.")
        async with self._db.system_session() as session:
            count = await self._refresh.revoke_user(session, principal.user_id)
            await audit.record(session, "auth.revoke", actor=principal, ip=ip, target_type="user",
                               target_id=principal.user_id, details={"families": count})
        return count

    async def _issue(self, session: AsyncSession, user_id: str, seat: _Seat,
                     family_id: str | None = None) -> TokenPair:
        refresh = await self._refresh.issue(session, org_id=seat.org_id, user_id=user_id,
                                            division_id=seat.division_id, family_id=family_id)
        access = self._access.issue(user_id=user_id, org_id=seat.org_id, role=seat.role,
                                    division_id=seat.division_id)
        return TokenPair(access.token, access.expires_in, refresh.token, refresh.expires_in, seat.org_id,
                         seat.role, seat.division_id)

    async def _audit_failure(self, action: str, reason: str, user: User | None, ip: str | None, *,
                             email: str) -> None:
        async with self._db.system_session() as session:
            await audit.record(session, action, org_id=user.org_id if user is not None else None,
                               outcome="failure", ip=ip, target_type="user",
                               target_id=user.id if user is not None else None,
                               details={"reason": reason, "email": email[:320]})

    async def _rehash(self, user_id: str, password: str) -> None:
        new_hash = await self.passwords.hash(password)
        async with self._db.system_session() as session:
            await session.execute(update(User).where(User.id == user_id).values(password_hash=new_hash))


async def _seat(session: AsyncSession, user: User, org_id: str) -> _Seat | None:
    """The user's role (and division) in ``org_id``: their membership there, else their home role."""
    membership = await session.scalar(
        select(Membership).where(Membership.user_id == user.id, Membership.org_id == org_id))
    if membership is not None and membership.role in ROLE_RANK:
        return _Seat(org_id, membership.role, membership.division_id)  # type: ignore[arg-type]
    if org_id == user.org_id and user.role in ROLE_RANK:
        return _Seat(org_id, user.role, None)  # type: ignore[arg-type]
    return None


def _actor(org_id: str, user_id: str) -> Principal:
    """The acting user for an audit row (which records only the ids) when no session was granted."""
    return Principal(org_id=org_id, user_id=user_id, role="viewer", via="access_token")


def _principal(user_id: str, seat: _Seat) -> Principal:
    return Principal(org_id=seat.org_id, user_id=user_id, role=seat.role, division_id=seat.division_id,
                     via="access_token")


def build_sessions(settings: AuthSettings, *, db: Database, access_tokens: AccessTokens,
                   storage: Storage) -> SessionService:
    return SessionService(db, passwords=Passwords(), access_tokens=access_tokens,
                          refresh_tokens=RefreshTokens(ttl_s=settings.refresh_token_ttl_s),
                          throttle=LoginThrottle(settings, storage))
