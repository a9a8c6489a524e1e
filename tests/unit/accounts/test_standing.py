"""The principal is read per request: a token names the user and the organisation, the role and division
come from the membership now (cached, dropped by ``user:<id>``); a key acts with at most its user's
current role, in its user's current division; an external token of a linked user likewise (issue 11
item 2)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import jwt
import pytest
from sqlalchemy import delete, update

from atrium.accounts.api_keys import ApiKeyAuthenticator, create_key
from atrium.accounts.authenticate import Authenticator
from atrium.accounts.external_idp import ExternalIdp, SharedSecret
from atrium.accounts.standing import Standing
from atrium.accounts.tokens import AccessTokens
from atrium.errors import Unauthorized
from atrium.settings import ExternalIdpSettings
from atrium.store.engine import Database
from atrium.store.models import Division, Membership, User
from atrium.store.pubsub import InProcessPubSub
from tests.unit.accounts.test_authenticator import authenticator

SECRET = "z" * 40


async def seat(db: Database, user_id: str = "user-a", org_id: str = "org-a", role: str = "admin",
               division_id: str | None = None) -> None:
    async with db.system_session() as session:
        session.add_all([Division(id="div-1", org_id="org-a", name="One"),
                         Division(id="div-2", org_id="org-a", name="Two")])
        session.add(Membership(org_id=org_id, user_id=user_id, role=role, division_id=division_id))


async def change_seat(db: Database, user_id: str = "user-a", org_id: str = "org-a", **values: object) -> None:
    async with db.system_session() as session:
        await session.execute(update(Membership).where(Membership.user_id == user_id, Membership.org_id == org_id)
                              .values(**values))


async def test_an_access_token_acts_with_the_current_role_and_division_not_its_claims(db: Database) -> None:
    await seat(db, role="admin", division_id=None)
    auth = authenticator(db, InProcessPubSub())
    # A token claiming more than the membership holds gets what the membership holds.
    token = auth.access_tokens.issue(user_id="user-a", org_id="org-a", role="owner", division_id="div-2").token
    principal = await auth.authenticate(token)
    assert (principal.role, principal.division_id, principal.via) == ("admin", None, "access_token")
    await change_seat(db, role="member", division_id="div-1")
    assert (await auth.authenticate(token)).role == "admin"  # cached, and nobody announced the change
    await auth.announce_user_changed("user-a")
    principal = await auth.authenticate(token)
    assert (principal.role, principal.division_id) == ("member", "div-1")


async def test_a_removed_member_is_refused_and_a_home_user_keeps_their_home_role(db: Database) -> None:
    auth = authenticator(db, InProcessPubSub(), ttl_s=0)
    # user-a has no membership row in its home org: the home role, as at login.
    token = auth.access_tokens.issue(user_id="user-a", org_id="org-a", role="admin").token
    assert (await auth.authenticate(token)).role == "member"
    # user-a holds no seat in org-b: a token for it (issued before a removal, say) is refused.
    elsewhere = auth.access_tokens.issue(user_id="user-a", org_id="org-b", role="admin").token
    with pytest.raises(Unauthorized, match="no longer a member"):
        await auth.authenticate(elsewhere)
    await seat(db, org_id="org-b", role="viewer")
    assert (await auth.authenticate(elsewhere)).role == "viewer"
    async with db.system_session() as session:
        await session.execute(delete(Membership).where(Membership.user_id == "user-a",
                                                       Membership.org_id == "org-b"))
    with pytest.raises(Unauthorized):
        await auth.authenticate(elsewhere)


async def test_changes_reach_another_replica_through_the_announcement(db: Database) -> None:
    await seat(db, role="admin")
    pubsub = InProcessPubSub()
    here, there = authenticator(db, pubsub), authenticator(db, pubsub)
    listener = asyncio.create_task(there.listen_for_revocations())
    try:
        token = here.access_tokens.issue(user_id="user-a", org_id="org-a", role="admin").token
        _, raw = await key_of(db, role="admin")
        for credential in (token, raw):
            assert (await there.authenticate(credential)).role == "admin"
        await change_seat(db, role="viewer")
        await asyncio.sleep(0)
        await here.announce_user_changed("user-a")
        for _ in range(50):
            if (await there.authenticate(token)).role == "viewer":
                break
            await asyncio.sleep(0.01)
        assert [(await there.authenticate(c)).role for c in (token, raw)] == ["viewer", "viewer"]
    finally:
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)


async def key_of(db: Database, *, role: str, division_id: str | None = None,
                 user_id: str | None = "user-a") -> tuple[str, str]:
    async with db.system_session() as session:
        row, raw = await create_key(session, org_id="org-a", user_id=user_id, role=role,  # type: ignore[arg-type]
                                    name="k", division_id=division_id)
        return row.id, raw


async def test_a_key_acts_with_at_most_its_users_current_role_and_in_their_division(db: Database) -> None:
    await seat(db, role="admin", division_id=None)
    keys = ApiKeyAuthenticator(db, ttl_s=0)
    _, admin_key = await key_of(db, role="admin")
    _, viewer_key = await key_of(db, role="viewer")
    _, scoped_key = await key_of(db, role="admin", division_id="div-2")
    _, userless = await key_of(db, role="admin", user_id=None)

    async def seen(raw: str) -> tuple[str, str | None] | None:
        principal = await keys.principal(raw)
        return None if principal is None else (principal.role, principal.division_id)

    assert [await seen(k) for k in (admin_key, viewer_key, scoped_key)] == [
        ("admin", None), ("viewer", None), ("admin", "div-2")]
    await change_seat(db, role="member", division_id="div-1")
    # Capped by the membership's role; in the user's division (a key never acts outside it).
    assert [await seen(k) for k in (admin_key, viewer_key, scoped_key)] == [
        ("member", "div-1"), ("viewer", "div-1"), ("member", "div-1")]
    await change_seat(db, division_id=None)
    assert await seen(scoped_key) == ("member", "div-2")  # an unscoped user's key keeps its own narrower scope
    assert await seen(userless) == ("admin", None)  # a key without a user: its own role
    async with db.system_session() as session:
        await session.execute(delete(Membership).where(Membership.user_id == "user-a",
                                                       Membership.org_id == "org-a"))
        # user-a's home is org-a: with no membership row, their home role (member) caps the key
    assert await seen(admin_key) == ("member", None)
    async with db.system_session() as session:
        await session.execute(update(User).where(User.id == "user-a").values(org_id="org-b"))
    assert await seen(admin_key) is None  # no seat in the key's organisation: refused


async def test_a_read_under_way_when_the_user_changes_is_not_cached_nor_joined(db: Database) -> None:
    await seat(db, role="admin")
    auth = authenticator(db, InProcessPubSub())
    release = asyncio.Event()
    reads: list[float] = []
    original = auth._read_standing

    async def slow_read(user_id: str, org_id: str) -> tuple[Standing | None, float]:
        result = await original(user_id, org_id)
        reads.append(time.monotonic())
        if len(reads) == 1:
            await release.wait()  # the change commits and is announced while this read is in flight
        return result

    auth._read_standing = slow_read  # type: ignore[method-assign]
    early = asyncio.create_task(auth.standing("user-a", "org-a"))
    await asyncio.sleep(0.01)
    await change_seat(db, role="viewer")
    auth.forget_user("user-a")
    later = await auth.standing("user-a", "org-a")  # does not join the read under way
    assert later is not None and later.role == "viewer"
    release.set()
    stale = await early
    assert stale is not None and stale.role == "admin"  # its own caller got it...
    again = await auth.standing("user-a", "org-a")
    assert again is not None and again.role == "viewer"  # ...but it was not cached over the newer read


async def test_an_external_token_of_a_linked_user_follows_the_membership(db: Database) -> None:
    await seat(db, role="member", division_id="div-1")
    config = ExternalIdpSettings(algorithms=["HS256"], secret=SECRET, claims={"org": "org", "role": "role",
                                                                              "division": "div"},
                                 role_map={"boss": "admin", "reader": "viewer"})
    idp = ExternalIdp(config, SharedSecret(SECRET), db)
    auth = Authenticator(db, api_keys=ApiKeyAuthenticator(db, ttl_s=600),
                         access_tokens=AccessTokens("s" * 40, issuer="atrium", audience="atrium", ttl_s=60),
                         external=idp, pubsub=InProcessPubSub(), cache_ttl_s=600)
    now = int(time.time())

    def token(role: str, **extra: object) -> str:
        return jwt.encode({"sub": "s1", "iat": now, "exp": now + 600, "org": "org-a", "role": role,
                           "email": "a@example.com", "email_verified": True, **extra}, SECRET, algorithm="HS256")

    # The IdP says admin; the membership says member in div-1: the lower role, the membership's division.
    principal = await auth.authenticate(token("boss", div="div-2"))
    assert (principal.user_id, principal.role, principal.division_id) == ("user-a", "member", "div-1")
    assert (await auth.authenticate(token("reader"))).role == "viewer"  # the IdP can lower it too
    await change_seat(db, role="viewer", division_id="div-2")
    await auth.announce_user_changed("user-a")
    principal = await auth.authenticate(token("boss", div="div-2"))
    assert (principal.role, principal.division_id) == ("viewer", "div-2")
    async with db.system_session() as session:
        await session.execute(update(User).where(User.id == "user-a").values(disabled_at=datetime.now(UTC)))
    await auth.announce_user_changed("user-a")
    with pytest.raises(Unauthorized):
        await auth.authenticate(token("boss"))
