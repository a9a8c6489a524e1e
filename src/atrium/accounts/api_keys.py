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
from datetime import UTC, datetime

from cachetools import TTLCache
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.accounts.principal import Principal, Role
from atrium.store.engine import Database
from atrium.store.models import ApiKey, User
from atrium.store.pubsub import PubSub
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
    found = (await session.execute(
        select(ApiKey, User.disabled_at).outerjoin(User, User.id == ApiKey.user_id)
        .where(ApiKey.key_hash == key_hash))).first()
    if found is None:
        return None
    row, user_disabled_at = found
    if row.revoked_at is not None or user_disabled_at is not None:
        return None
    expires_at = _aware(row.expires_at) if row.expires_at is not None else None
    if expires_at is not None and expires_at <= datetime.now(UTC):
        return None
    principal = Principal(org_id=row.org_id, user_id=row.user_id, role=row.role,  # type: ignore[arg-type]
                          api_key_id=row.id, division_id=row.division_id, via="api_key",
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
        self._lookups: SingleFlight[str, tuple[Principal, datetime | None] | None] = SingleFlight()

    async def principal(self, raw_key: str) -> Principal | None:
        if not looks_like_key(raw_key):
            return None
        key_hash = hash_key(raw_key)
        cached = self._cache.get(key_hash) if self._cache is not None else None
        if cached is None:
            cached = await self._lookups.run(key_hash, lambda: self._lookup(key_hash))
            if cached is None or cached[0].api_key_id in self._recently_revoked:
                return None
            if self._cache is not None and self._hash_by_id is not None:
                self._cache[key_hash] = cached
                self._hash_by_id[cached[0].api_key_id or ""] = key_hash
        principal, expires_at = cached
        if expires_at is not None and expires_at <= datetime.now(UTC):
            return None
        return principal

    async def _lookup(self, key_hash: str) -> tuple[Principal, datetime | None] | None:
        async with self._db.system_session() as session:
            return await _lookup(session, key_hash)

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
        if self._cache is None or self._hash_by_id is None:
            return
        key_hash = self._hash_by_id.pop(key_id, None)
        if key_hash is not None:
            self._cache.pop(key_hash, None)
            self._lookups.forget(key_hash)

    def forget_user(self, user_id: str) -> None:
        """Drop every cached key of ``user_id`` (the user was disabled)."""
        if self._cache is None:
            return
        for key_hash, (principal, _) in list(self._cache.items()):
            if principal.user_id == user_id:
                self._cache.pop(key_hash, None)

    def forget_all(self) -> None:
        if self._cache is not None:
            self._cache.clear()
        if self._hash_by_id is not None:
            self._hash_by_id.clear()


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
