"""API keys: ``atr_`` + 40 random url-safe characters, shown once, stored only as a SHA-256 hash.

A key carries 240 bits of entropy, so a fast hash is the right tool here (argon2 is for passwords, which
are guessable); lookups are by hash, constant-time by construction.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.accounts.principal import Principal, Role
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


async def principal_for_key(session: AsyncSession, raw_key: str) -> Principal | None:
    """The principal a valid, unrevoked, unexpired key stands for; ``None`` otherwise."""
    if not looks_like_key(raw_key):
        return None
    row = await session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(raw_key)))
    if row is None or row.revoked_at is not None:
        return None
    if row.expires_at is not None and _aware(row.expires_at) <= datetime.now(UTC):
        return None
    return Principal(org_id=row.org_id, user_id=row.user_id, role=row.role, api_key_id=row.id)  # type: ignore[arg-type]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
