"""API keys: ``atr_`` + 40 random url-safe characters, shown once, stored only as a SHA-256 hash.

A key carries 240 bits of entropy, so a fast hash is the right tool here (argon2 is for passwords, which
are guessable); lookups are by hash, constant-time by construction.

Resolving a key is the gateway's hot path, so a verified key is trusted from memory for
``auth.key_cache_ttl_s`` seconds. Revocation still takes effect at once on every replica: the revoking
process calls ``announce_revocation(key_id)``, which drops the key here and publishes it on the
``auth.revocations`` channel; every replica's listener (``Authenticator.listen_for_revocations``) drops it
too. Redis pub/sub is at-most-once (a replica reconnecting can miss a message), so the cache TTL stays the
upper bound on how long a revoked key can live.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from datetime import UTC, datetime

from cachetools import TTLCache
from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.accounts.principal import ROLE_RANK, Principal, Role
from atrium.store.engine import Database
from atrium.store.models import ApiKey, Membership, User
from atrium.store.ports import PubSub
from atrium.store.single_flight import SingleFlight

log = logging.getLogger(__name__)

KEY_PREFIX = "atr_"
REVOCATIONS_CHANNEL = "auth.revocations"
_CACHE_SIZE = 10_000


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(30)


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def looks_like_key(raw_key: str) -> bool:
    return raw_key.startswith(KEY_PREFIX) and 32 <= len(raw_key) <= 200


def key_revoked_message(key_id: str) -> str:
    return f"key:{key_id}"


def user_disabled_message(user_id: str) -> str:
    return f"user:{user_id}"


async def create_key(session: AsyncSession, *, org_id: str, user_id: str | None, role: Role, name: str,
                     raw_key: str | None = None, division_id: str | None = None,
                     requests_per_minute: int | None = None,
                     tokens_per_minute: int | None = None) -> tuple[ApiKey, str]:
    """Store a new key (or the given one) and return it with the raw value, which is never stored."""
    raw = raw_key or generate_key()
    row = ApiKey(org_id=org_id, user_id=user_id, role=role, name=name, prefix=raw[:12], key_hash=hash_key(raw),
                 division_id=division_id, requests_per_minute=requests_per_minute,
                 tokens_per_minute=tokens_per_minute)
    session.add(row)
    await session.flush()
    return row, raw


async def _lookup(session: AsyncSession, key_hash: str) -> tuple[Principal, datetime | None] | None:
    """The principal a live key acts as. A key of a user acts with at most the user's current role in the
    key's organisation, in the user's current division when they have one (else in the key's own), and not
    at all once the user is disabled or no longer a member there."""
    found = (await session.execute(
        select(ApiKey, User.disabled_at, User.org_id.label("home_org_id"), User.role.label("home_role"),
               Membership.role.label("seat_role"), Membership.division_id.label("seat_division_id"))
        .outerjoin(User, User.id == ApiKey.user_id)
        .outerjoin(Membership, and_(Membership.user_id == ApiKey.user_id, Membership.org_id == ApiKey.org_id))
        .where(ApiKey.key_hash == key_hash))).first()
    if found is None:
        return None
    row = found.ApiKey
    if row.revoked_at is not None or found.disabled_at is not None or row.role not in ROLE_RANK:
        return None
    expires_at = _aware(row.expires_at) if row.expires_at is not None else None
    if expires_at is not None and expires_at <= datetime.now(UTC):
        return None
    role: str = row.role
    division_id = row.division_id
    if row.user_id is not None:
        if found.seat_role is not None:
            seat_role, seat_division = found.seat_role, found.seat_division_id
        elif found.home_org_id == row.org_id:  # a home user without a membership row: their home role
            seat_role, seat_division = found.home_role, None
        else:
            return None  # the user is no longer a member of the key's organisation
        if seat_role not in ROLE_RANK:
            return None
        role = row.role if ROLE_RANK[row.role] <= ROLE_RANK[seat_role] else seat_role
        division_id = seat_division if seat_division is not None else row.division_id
    principal = Principal(org_id=row.org_id, user_id=row.user_id, role=role,  # type: ignore[arg-type]
                          api_key_id=row.id, division_id=division_id, via="api_key",
                          key_requests_per_minute=row.requests_per_minute,
                          key_tokens_per_minute=row.tokens_per_minute)
    return principal, expires_at


class ApiKeyAuthenticator:
    """Resolves keys to principals, trusting a verified key for ``ttl_s`` seconds without another database
    lookup (a key lookup per request would dominate the gateway's hot path). ``announce_revocation``
    ends a key's life at once here and, through ``pubsub``, on every replica."""

    def __init__(self, db: Database, *, ttl_s: float, pubsub: PubSub | None = None) -> None:
        self._db = db
        self._pubsub = pubsub
        self._ttl_s = ttl_s
        self._cache: TTLCache[str, tuple[Principal, datetime | None]] | None = (
            TTLCache(maxsize=_CACHE_SIZE, ttl=ttl_s) if ttl_s > 0 else None)
        self._hash_by_id: TTLCache[str, str] | None = (
            TTLCache(maxsize=_CACHE_SIZE, ttl=ttl_s) if ttl_s > 0 else None)
        # Keys revoked in the last ``ttl_s``: a lookup that began before the revocation committed must not
        # put the key back in the cache.
        self._recently_revoked: TTLCache[str, bool] = TTLCache(maxsize=_CACHE_SIZE, ttl=max(ttl_s, 1.0))
        self._lookups: SingleFlight[tuple[str, int], tuple[tuple[Principal, datetime | None] | None, float]] = (
            SingleFlight())
        # Users whose keys were forgotten (their role, division or status changed), and when: a lookup that
        # began before is not cached, and ``_epoch`` (bumped at each) keeps later callers from joining it.
        self._forgotten_users: TTLCache[str, float] = TTLCache(maxsize=_CACHE_SIZE, ttl=max(ttl_s, 1.0))
        self._epoch = 0

    async def principal(self, raw_key: str) -> Principal | None:
        if not looks_like_key(raw_key):
            return None
        key_hash = hash_key(raw_key)
        cached = self._cache.get(key_hash) if self._cache is not None else None
        if cached is None:
            cached, started = await self._lookups.run((key_hash, self._epoch), lambda: self._lookup(key_hash))
            if cached is None or cached[0].api_key_id in self._recently_revoked:
                return None
            user_id = cached[0].user_id
            fresh = user_id is None or self._forgotten_users.get(user_id, -1.0) < started
            if self._cache is not None and self._hash_by_id is not None and fresh:
                self._cache[key_hash] = cached
                self._hash_by_id[cached[0].api_key_id or ""] = key_hash
        principal, expires_at = cached
        if expires_at is not None and expires_at <= datetime.now(UTC):
            return None
        return principal

    async def _lookup(self, key_hash: str) -> tuple[tuple[Principal, datetime | None] | None, float]:
        started = time.monotonic()
        async with self._db.system_session() as session:
            return await _lookup(session, key_hash), started

    async def announce_revocation(self, key_id: str) -> None:
        """Call after the revocation committed: forget the key here and tell every replica to. A failed
        publish is logged, not raised (the revocation stands; other replicas drop the key within the TTL)."""
        self.forget_key(key_id)
        await self._publish(key_revoked_message(key_id))

    async def _publish(self, message: str) -> None:
        if self._pubsub is None:
            return
        try:
            await self._pubsub.publish(REVOCATIONS_CHANNEL, message)
        except Exception:
            log.warning("could not announce a revocation; other replicas catch up within %.0f s", self._ttl_s,
                        exc_info=True)

    def forget_key(self, key_id: str) -> None:
        self._recently_revoked[key_id] = True
        self._epoch += 1  # later callers do not join a lookup under way
        if self._cache is None or self._hash_by_id is None:
            return
        key_hash = self._hash_by_id.pop(key_id, None)
        if key_hash is not None:
            self._cache.pop(key_hash, None)

    def forget_user(self, user_id: str) -> None:
        """Drop every cached key of ``user_id`` (the user was changed: role, division, membership, status)."""
        self._forgotten_users[user_id] = time.monotonic()
        self._epoch += 1
        if self._cache is None:
            return
        for key_hash, (principal, _) in list(self._cache.items()):
            if principal.user_id == user_id:
                self._cache.pop(key_hash, None)

    def forget_all(self) -> None:
        self._epoch += 1
        if self._cache is not None:
            self._cache.clear()
        if self._hash_by_id is not None:
            self._hash_by_id.clear()


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
