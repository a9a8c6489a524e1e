"""API keys: ``atr_`` + 40 random url-safe characters, shown once, stored only as a SHA-256 hash.

A key carries 240 bits of entropy, so a fast hash is the right tool here (argon2 is for passwords, which
are guessable); lookups are by hash, constant-time by construction.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

from cachetools import TTLCache
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.accounts.principal import Principal, Role
from atrium.store.engine import Database
from atrium.store.models import ApiKey

KEY_PREFIX = "atr_"


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(30)


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def looks_like_key(raw_key: str) -> bool:
    return raw_key.startswith(KEY_PREFIX) and 32 <= len(raw_key) <= 200


async def create_key(session: AsyncSession, *, org_id: str, user_id: str | None, role: Role, name: str,
                     raw_key: str | None = None) -> tuple[ApiKey, str]:
    """Store a new key (or the given one) and return it with the raw value, which is never stored."""
    raw = raw_key or generate_key()
    row = ApiKey(org_id=org_id, user_id=user_id, role=role, name=name, prefix=raw[:12], key_hash=hash_key(raw))
    session.add(row)
    await session.flush()
    return row, raw


async def _lookup(session: AsyncSession, key_hash: str) -> tuple[Principal, datetime | None] | None:
    row = await session.scalar(select(ApiKey).where(ApiKey.key_hash == key_hash))
    if row is None or row.revoked_at is not None:
        return None
    expires_at = _aware(row.expires_at) if row.expires_at is not None else None
    if expires_at is not None and expires_at <= datetime.now(UTC):
        return None
    principal = Principal(org_id=row.org_id, user_id=row.user_id, role=row.role,  # type: ignore[arg-type]
                          api_key_id=row.id)
    return principal, expires_at


class ApiKeyAuthenticator:
    """Resolves keys to principals, trusting a verified key for ``ttl_s`` seconds without another database
    lookup (a key lookup per request would dominate the gateway's hot path). A revoked key therefore
    stops working within ``ttl_s``; ``forget_all`` drops the cache at once (call it on revocation)."""

    def __init__(self, db: Database, *, ttl_s: float) -> None:
        self._db = db
        self._cache: TTLCache[str, tuple[Principal, datetime | None]] | None = (
            TTLCache(maxsize=10_000, ttl=ttl_s) if ttl_s > 0 else None)

    async def principal(self, raw_key: str) -> Principal | None:
        if not looks_like_key(raw_key):
            return None
        key_hash = hash_key(raw_key)
        cached = self._cache.get(key_hash) if self._cache is not None else None
        if cached is None:
            async with self._db.session() as session:
                cached = await _lookup(session, key_hash)
            if cached is None:
                return None
            if self._cache is not None:
                self._cache[key_hash] = cached
        principal, expires_at = cached
        if expires_at is not None and expires_at <= datetime.now(UTC):
            return None
        return principal

    def forget_all(self) -> None:
        if self._cache is not None:
            self._cache.clear()


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
