"""The Authenticator: API keys (cached, with division and limits), revocation announced over the pub/sub
and applied by the listener, disabled users, routing of JWTs by issuer."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import event, update

from atrium.accounts.api_keys import ApiKeyAuthenticator, create_key
from atrium.accounts.authenticate import Authenticator
from atrium.accounts.tokens import AccessTokens
from atrium.errors import Unauthorized
from atrium.store.engine import Database
from atrium.store.models import ApiKey, Division, User
from atrium.store.ports import PubSub
from atrium.store.pubsub import InProcessPubSub, RedisPubSub


def authenticator(db: Database, pubsub: PubSub, ttl_s: float = 600) -> Authenticator:
    return Authenticator(db, api_keys=ApiKeyAuthenticator(db, ttl_s=ttl_s, pubsub=pubsub),
                         access_tokens=AccessTokens("s" * 40, issuer="atrium", audience="atrium", ttl_s=60),
                         external=None, pubsub=pubsub, cache_ttl_s=ttl_s)


async def new_key(db: Database, user_id: str | None = None, **limits: object) -> tuple[str, str]:
    async with db.system_session() as session:
        row, raw = await create_key(session, org_id="org-a", user_id=user_id, role="member", name="k",
                                    **limits)  # type: ignore[arg-type]
        return row.id, raw


async def revoke_in_db(db: Database, key_id: str) -> None:
    async with db.system_session() as session:
        await session.execute(update(ApiKey).where(ApiKey.id == key_id).values(revoked_at=datetime.now(UTC)))


async def test_a_key_carries_its_division_and_limits(db: Database) -> None:
    async with db.system_session() as session:
        session.add(Division(id="div-1", org_id="org-a", name="Ops"))
    key_id, raw = await new_key(db, "user-a", division_id="div-1", requests_per_minute=5, tokens_per_minute=50)
    principal = await authenticator(db, InProcessPubSub()).authenticate(raw)
    assert (principal.api_key_id, principal.org_id, principal.user_id, principal.division_id, principal.via,
            principal.key_requests_per_minute, principal.key_tokens_per_minute) == (
        key_id, "org-a", "user-a", "div-1", "api_key", 5, 50)


async def test_cached_keys_outlive_a_silent_revocation_but_not_an_announced_one(db: Database) -> None:
    pubsub = InProcessPubSub()
    here, there = authenticator(db, pubsub), authenticator(db, pubsub)
    listener = asyncio.create_task(there.listen_for_revocations())
    try:
        key_id, raw = await new_key(db)
        assert await here.principal(raw) is not None and await there.principal(raw) is not None
        await revoke_in_db(db, key_id)
        assert await there.principal(raw) is not None  # cached: no database lookup per request
        await asyncio.sleep(0)  # the listener subscribes
        await here.announce_revocation(key_id)
        assert await here.principal(raw) is None  # at once on the announcing process
        for _ in range(50):
            if await there.principal(raw) is None:
                break
            await asyncio.sleep(0.01)
        assert await there.principal(raw) is None  # and on the listening one
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)


async def test_without_a_cache_revocation_is_immediate(db: Database) -> None:
    auth = authenticator(db, InProcessPubSub(), ttl_s=0)
    key_id, raw = await new_key(db)
    assert await auth.principal(raw) is not None
    await revoke_in_db(db, key_id)
    assert await auth.principal(raw) is None


async def test_disabled_users_keys_and_tokens_are_refused(db: Database) -> None:
    auth = authenticator(db, InProcessPubSub())
    _, raw = await new_key(db, "user-a")
    token = auth.access_tokens.issue(user_id="user-a", org_id="org-a", role="member").token
    assert (await auth.authenticate(raw)).user_id == "user-a"
    assert (await auth.authenticate(token)).via == "access_token"
    async with db.system_session() as session:
        await session.execute(update(User).where(User.id == "user-a").values(disabled_at=datetime.now(UTC)))
    await auth.announce_user_disabled("user-a")
    for credential in (raw, token):
        with pytest.raises(Unauthorized):
            await auth.authenticate(credential)


async def test_credentials_of_unknown_shapes_and_issuers_are_refused(db: Database) -> None:
    auth = authenticator(db, InProcessPubSub())
    foreign = AccessTokens("s" * 40, issuer="someone-else", audience="atrium", ttl_s=60)
    for credential in ("atr_short", "atr_" + "x" * 40, "hello", "a.b.c",
                       foreign.issue(user_id="user-a", org_id="org-a", role="owner").token):
        with pytest.raises(Unauthorized):
            await auth.authenticate(credential)


async def test_a_broken_subscription_drops_every_cache(db: Database, tmp_path: Path) -> None:
    unreachable = RedisPubSub(f"unix://{tmp_path / 'no-redis.sock'}")  # a real adapter, nothing listening
    auth = authenticator(db, unreachable)
    key_id, raw = await new_key(db)
    assert await auth.principal(raw) is not None
    await revoke_in_db(db, key_id)
    listener = asyncio.create_task(auth.listen_for_revocations())
    await asyncio.sleep(0.05)
    listener.cancel()
    await asyncio.gather(listener, return_exceptions=True)
    assert await auth.principal(raw) is None  # the cache was dropped, the database says revoked
    await unreachable.aclose()


async def test_requests_that_find_a_key_uncached_share_one_lookup(db: Database) -> None:
    """A stampede guard: when a busy key's cache entry expires, the requests arriving meanwhile must not
    each query the database (they would queue on its driver thread, tens of ms under 50 streams)."""
    _, raw = await new_key(db, "user-a")
    auth = authenticator(db, InProcessPubSub())
    token = auth.access_tokens.issue(user_id="user-a", org_id="org-a", role="member").token
    statements: list[str] = []
    event.listen(db.engine.sync_engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    principals = await asyncio.gather(*(auth.authenticate(credential)
                                        for _ in range(30) for credential in (raw, token)))
    assert [p.user_id for p in principals] == ["user-a"] * 60
    assert len(statements) == 2, statements  # one for the key, one for the token's user
