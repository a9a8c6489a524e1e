"""Users, memberships across organisations, divisions and the audit trail's listing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from atrium.accounts.admin import KeySpec, UserChanges
from atrium.accounts.principal import Principal
from atrium.errors import Conflict, Forbidden, InvalidRequest
from atrium.store.models import ApiKey, Membership, RefreshToken, User, new_id
from tests.unit.accounts.admin_helpers import World, every_value, world

__all__ = ["world"]

PASSWORD = "a correct horse battery"


async def _refresh_token(world: World, user_id: str, org_id: str) -> str:
    async with world.db.system_session() as session:
        token = RefreshToken(org_id=org_id, user_id=user_id, family_id=new_id(), token_hash=new_id() * 2,
                             expires_at=datetime.now(UTC) + timedelta(days=1))
        session.add(token)
        await session.flush()
        return token.id


async def _revoked(world: World, token_id: str) -> bool:
    async with world.db.system_session() as session:
        token = await session.get(RefreshToken, token_id)
        assert token is not None
        return token.revoked_at is not None


async def test_create_user_hashes_the_password_and_audits_without_it(world: World) -> None:
    async with world.acting(world.owner) as admin:
        member = await admin.create_user(world.org_id, email="  Ada@Example.ORG ", name="Ada", role="admin",
                                         password=PASSWORD)
    assert member.user.email == "ada@example.org"
    assert member.user.password_hash is not None and PASSWORD not in member.user.password_hash
    assert await world.passwords.verify(member.user.password_hash, PASSWORD)
    assert (member.membership.org_id, member.membership.role) == (world.org_id, "admin")
    for email, error in (("ADA@example.org", Conflict), ("bot@service.local", InvalidRequest),
                         ("not an email", InvalidRequest)):
        with pytest.raises(error):
            async with world.acting(world.owner) as admin:
                await admin.create_user(world.org_id, email=email, name="Dup", role="member")
    events = await world.audit(world.org_id)
    assert [e.action for e in events].count("user.create") == 1
    for event in events:
        assert PASSWORD not in every_value(event) and member.user.password_hash not in every_value(event)


async def test_a_user_joins_another_organisation_with_its_own_role(world: World) -> None:
    async with world.acting(world.owner) as admin:
        acme, _ = await admin.create_org("Acme")
    acme_owner = Principal(org_id=acme.id, user_id=world.owner.user_id, role="owner")
    ada = await world.person("member", email="ada@example.org")
    assert ada.user_id is not None
    await world.join(acme_owner, ada, "ADA@example.org", "admin")
    async with world.acting(acme_owner) as admin:
        joined = await admin.get_user(acme.id, ada.user_id)
        assert (joined.membership.role, joined.user.org_id) == ("admin", world.org_id)
        key = await admin.create_key(acme.id, KeySpec(name="ada at acme", user_id=ada.user_id))
    assert key.row.role == "admin"  # her role at Acme, not at home
    with pytest.raises(Conflict, match="already a member"):  # Acme lists her now: nothing is revealed
        async with world.acting(acme_owner) as admin:
            await admin.add_membership(acme.id, email="ada@example.org", role="member")
    # Acme administers her membership, not her account.
    for changes in (UserChanges(name="Renamed"), UserChanges(password=PASSWORD), UserChanges(disabled=True)):
        with pytest.raises(Forbidden, match="home organisation"):
            async with world.acting(acme_owner) as admin:
                await admin.update_user(acme.id, ada.user_id, changes)
    # ...and can never make her its owner.
    with pytest.raises(Forbidden, match="home is this organisation"):
        async with world.acting(acme_owner) as admin:
            await admin.update_user(acme.id, ada.user_id, UserChanges(role="owner"))
    with pytest.raises(Conflict, match="home organisation"):
        async with world.acting(world.owner) as admin:
            await admin.remove_membership(world.org_id, ada.user_id)
    # Leaving Acme revokes her Acme keys and sessions, and nothing at home.
    async with world.acting(world.owner) as admin:
        home_key = await admin.create_key(world.org_id, KeySpec(name="home", user_id=ada.user_id))
    acme_session = await _refresh_token(world, ada.user_id, acme.id)
    home_session = await _refresh_token(world, ada.user_id, world.org_id)
    async with world.acting(acme_owner) as admin:
        assert await admin.delete_user(acme.id, ada.user_id) == "removed"
        assert admin.stale_keys == [key.row.id]
        assert admin.stale_users == [ada.user_id]
    async with world.db.system_session() as session:
        keys = {row.id: row.revoked_at for row in (await session.scalars(
            select(ApiKey).where(ApiKey.user_id == ada.user_id))).all()}
        memberships = set((await session.scalars(
            select(Membership.org_id).where(Membership.user_id == ada.user_id))).all())
    assert keys[key.row.id] is not None and keys[home_key.row.id] is None
    assert memberships == {world.org_id}
    assert await _revoked(world, acme_session) and not await _revoked(world, home_session)
    assert await world.actions(acme.id) == ["membership.add", "invitation.create", "invitation.accept",
                                            "membership.add", "key.create", "membership.remove"]


async def test_deleting_a_user_at_home_removes_the_account_everywhere(world: World) -> None:
    async with world.acting(world.owner) as admin:
        acme, _ = await admin.create_org("Acme")
    ada = await world.person("member", email="ada@example.org")
    assert ada.user_id is not None
    acme_owner = Principal(org_id=acme.id, user_id=world.owner.user_id, role="owner")
    await world.join(acme_owner, ada, "ada@example.org")
    async with world.acting(acme_owner) as admin:
        await admin.create_key(acme.id, KeySpec(name="acme", user_id=ada.user_id))
    async with world.acting(world.owner) as admin:
        assert await admin.delete_user(world.org_id, ada.user_id) == "deleted"
        assert admin.stale_users == [ada.user_id]
    async with world.db.system_session() as session:
        assert await session.get(User, ada.user_id) is None
        assert not (await session.scalars(select(Membership).where(Membership.user_id == ada.user_id))).all()
        assert not (await session.scalars(select(ApiKey).where(ApiKey.user_id == ada.user_id))).all()
    delete = [e for e in await world.audit(world.org_id) if e.action == "user.delete"]
    assert len(delete) == 1 and delete[0].target_id == ada.user_id
    assert delete[0].details is not None and delete[0].details["keys_deleted"] == 1


async def test_password_reset_and_disable_end_sessions(world: World) -> None:
    ada = await world.person("member", password=PASSWORD)
    assert ada.user_id is not None
    first = await _refresh_token(world, ada.user_id, world.org_id)
    async with world.acting(world.owner) as admin:
        await admin.update_user(world.org_id, ada.user_id, UserChanges(password="another long password"))
    assert await _revoked(world, first)
    async with world.db.system_session() as session:
        user = await session.get(User, ada.user_id)
        assert user is not None and user.password_hash is not None
        assert await world.passwords.verify(user.password_hash, "another long password")
    async with world.acting(world.owner) as admin:
        key = await admin.create_key(world.org_id, KeySpec(name="k", user_id=ada.user_id))
    session_id = await _refresh_token(world, ada.user_id, world.org_id)
    async with world.acting(world.owner) as admin:
        disabled = await admin.update_user(world.org_id, ada.user_id, UserChanges(disabled=True))
        assert disabled.user.disabled_at is not None and admin.stale_users == [ada.user_id]
    assert await _revoked(world, session_id)
    async with world.acting(world.owner) as admin:
        page = await admin.list_keys(world.org_id, include_revoked=False, limit=50, offset=0)
        assert key.row.id in {k.id for k, _ in page.items}  # suspended with the user, not revoked
        enabled = await admin.update_user(world.org_id, ada.user_id, UserChanges(disabled=False))
        assert enabled.user.disabled_at is None
        assert admin.stale_users == [ada.user_id]  # a refusal cached for her credentials is dropped too
    actions = await world.actions(world.org_id)
    assert actions[-2:] == ["user.disable", "user.enable"]
    update = next(e for e in await world.audit(world.org_id) if e.action == "user.update")
    assert update.details is not None and update.details["fields"] == ["password_reset"]


async def test_divisions_are_unique_and_deleted_only_when_empty(world: World) -> None:
    async with world.acting(world.owner) as admin:
        ops = await admin.create_division(world.org_id, "Ops")
    with pytest.raises(Conflict):
        async with world.acting(world.owner) as admin:
            await admin.create_division(world.org_id, "Ops")
    member = await world.person("member", division_id=ops.id)
    assert member.user_id is not None
    with pytest.raises(Conflict, match="1 members"):
        async with world.acting(world.owner) as admin:
            await admin.delete_division(world.org_id, ops.id)
    async with world.acting(world.owner) as admin:
        await admin.update_user(world.org_id, member.user_id, UserChanges(division_id=None, set_division=True))
        key = await admin.create_key(world.org_id, KeySpec(name="scoped", division_id=ops.id))
    with pytest.raises(Conflict, match="1 live API keys"):
        async with world.acting(world.owner) as admin:
            await admin.delete_division(world.org_id, ops.id)
    async with world.acting(world.owner) as admin:
        await admin.revoke_key(world.org_id, key.row.id)
        await admin.delete_division(world.org_id, ops.id)
        assert not (await admin.list_divisions(world.org_id, limit=10, offset=0)).items
    assert [a for a in await world.actions(world.org_id) if a.startswith("division.")] == [
        "division.create", "division.delete"]


async def test_lists_page_and_the_audit_filters_newest_first(world: World) -> None:
    for number in range(5):
        await world.person("viewer", email=f"p{number}@example.org")
    async with world.acting(world.owner) as admin:
        first = await admin.list_users(world.org_id, service=False, limit=4, offset=0)
        rest = await admin.list_users(world.org_id, service=False, limit=4, offset=4)
        assert first.next_offset == 4 and rest.next_offset is None
        assert len({m.user.id for m in first.items + rest.items}) == 6
        await admin.create_key(world.org_id, KeySpec(name="a"))
        await admin.create_division(world.org_id, "D")
    async with world.acting(world.owner) as admin:
        newest, cursor = await admin.list_audit(world.org_id, action=None, before=None, limit=3)
        assert [e.action for e in newest] == ["division.create", "key.create", "user.create"]
        assert cursor == newest[-1].id
        older, end = await admin.list_audit(world.org_id, action=None, before=cursor, limit=50)
        assert [e.action for e in older] == ["user.create"] * 4 and end is None
        exact, _ = await admin.list_audit(world.org_id, action="key.create", before=None, limit=50)
        prefix, _ = await admin.list_audit(world.org_id, action="user.*", before=None, limit=50)
        assert [e.action for e in exact] == ["key.create"] and len(prefix) == 5
