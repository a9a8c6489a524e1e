"""Rotating refresh tokens on the real table: rotation, reuse revokes the family, one winner under races,
expiry, revoke-all; only hashes are stored."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update

from atrium.accounts.refresh import RefreshError, RefreshTokens, hash_token
from atrium.store.engine import Database
from atrium.store.models import RefreshToken


async def issue(db: Database, refresh: RefreshTokens, user: str = "user-a", org: str = "org-a",
                family: str | None = None) -> str:
    async with db.system_session() as session:
        return (await refresh.issue(session, org_id=org, user_id=user, division_id=None, family_id=family)).token


async def consume(db: Database, refresh: RefreshTokens, raw: str) -> RefreshToken:
    """As the session service does: a refusal is raised after the transaction (and a family revocation
    on reuse) committed."""
    async with db.system_session() as session:
        try:
            return await refresh.consume(session, raw)
        except RefreshError as error:
            refused = error
    raise refused


async def test_rotation_then_reuse_revokes_the_family(db: Database) -> None:
    refresh = RefreshTokens(ttl_s=3600)
    first = await issue(db, refresh)
    row = await consume(db, refresh, first)
    second = await issue(db, refresh, family=row.family_id)
    async with db.system_session() as session:
        stored = (await session.scalars(select(RefreshToken.token_hash))).all()
    assert sorted(stored) == sorted([hash_token(first), hash_token(second)])  # never the raw token
    with pytest.raises(RefreshError) as caught:
        await consume(db, refresh, first)
    assert caught.value.reused and caught.value.reason == "reused"
    with pytest.raises(RefreshError) as caught:
        await consume(db, refresh, second)
    assert caught.value.reason == "revoked"


async def test_only_one_of_concurrent_uses_wins(db: Database) -> None:
    refresh = RefreshTokens(ttl_s=3600)
    raw = await issue(db, refresh)
    results = await asyncio.gather(*(consume(db, refresh, raw) for _ in range(5)), return_exceptions=True)
    assert sum(isinstance(result, RefreshToken) for result in results) == 1
    assert all(isinstance(result, RefreshToken | RefreshError) for result in results)


async def test_expired_and_unknown_tokens(db: Database) -> None:
    refresh = RefreshTokens(ttl_s=3600)
    raw = await issue(db, refresh)
    async with db.system_session() as session:
        await session.execute(update(RefreshToken).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    with pytest.raises(RefreshError) as caught:
        await consume(db, refresh, raw)
    assert caught.value.reason == "expired" and not caught.value.reused
    for bad in ("atrr_unknown", "not-ours", "atrr_" + "x" * 300):
        with pytest.raises(RefreshError) as caught:
            await consume(db, refresh, bad)
        assert caught.value.reason == "unknown"


async def test_revoke_user_cuts_every_family_of_that_user_only(db: Database) -> None:
    refresh = RefreshTokens(ttl_s=3600)
    mine = [await issue(db, refresh), await issue(db, refresh)]
    theirs = await issue(db, refresh, user="user-b", org="org-b")
    async with db.system_session() as session:
        assert await refresh.revoke_user(session, "user-a") == 2
    for raw in mine:
        with pytest.raises(RefreshError):
            await consume(db, refresh, raw)
    assert (await consume(db, refresh, theirs)).user_id == "user-b"
