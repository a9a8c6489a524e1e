"""Tenants and divisions: another organisation's ids are "not found" on every path, a division-scoped
credential administers only its division, and only the platform admin creates organisations."""

from __future__ import annotations

import pytest

from atrium.accounts.admin import KeySpec, UserChanges
from atrium.accounts.principal import Principal
from atrium.errors import Forbidden, NotFound
from tests.unit.accounts.admin_helpers import World, world

__all__ = ["world"]


async def test_another_tenants_ids_are_not_found_anywhere(world: World) -> None:
    async with world.acting(world.owner) as admin:
        acme, acme_key = await admin.create_org("Acme", owner_key=True)
    assert acme_key is not None and acme_key.row.org_id == acme.id
    acme_owner = Principal(org_id=acme.id, user_id=world.owner.user_id, role="owner", api_key_id=acme_key.row.id)
    acme_admin = await world.person("admin", org_id=acme.id)
    async with world.acting(world.owner) as admin:
        division = await admin.create_division(world.org_id, "Home division")
        home_user = await admin.create_user(world.org_id, email="home@example.org", name="Home", role="member")
        home_key = await admin.create_key(world.org_id, KeySpec(name="home key", user_id=home_user.user.id))
    attempts = [
        lambda a: a.get_user(acme.id, home_user.user.id),
        lambda a: a.update_user(acme.id, home_user.user.id, UserChanges(role="viewer")),
        lambda a: a.delete_user(acme.id, home_user.user.id),
        lambda a: a.remove_membership(acme.id, home_user.user.id),
        lambda a: a.delete_division(acme.id, division.id),
        lambda a: a.revoke_key(acme.id, home_key.row.id),
        lambda a: a.rotate_key(acme.id, home_key.row.id),
        lambda a: a.create_key(acme.id, KeySpec(name="steal", user_id=home_user.user.id)),
        lambda a: a.create_key(acme.id, KeySpec(name="steal", division_id=division.id)),
        lambda a: a.create_user(acme.id, email="new@example.org", name="N", role="viewer", division_id=division.id),
        lambda a: a.find_division(acme.id, division.id),
        lambda a: a.member_by_email(acme.id, "home@example.org"),
    ]
    for actor in (acme_owner, acme_admin):
        for attempt in attempts:
            with pytest.raises(NotFound):
                async with world.acting(actor) as admin:
                    await attempt(admin)
        # Naming another org as the tenant is refused the same way, whatever the method.
        with pytest.raises(NotFound):
            async with world.acting(actor) as admin:
                await admin.list_users(world.org_id, service=False, limit=10, offset=0)
    async with world.acting(acme_admin) as admin:
        users = await admin.list_users(acme.id, service=False, limit=50, offset=0)
        keys = await admin.list_keys(acme.id, include_revoked=True, limit=50, offset=0)
        audit, _ = await admin.list_audit(acme.id, action=None, before=None, limit=200)
    assert home_user.user.id not in {m.user.id for m in users.items}
    assert {key.org_id for key, _ in keys.items} == {acme.id}
    assert {event.org_id for event in audit} == {acme.id}
    async with world.acting(world.owner) as admin:  # nothing changed at home
        still = await admin.get_user(world.org_id, home_user.user.id)
        assert still.membership.role == "member"
        live = await admin.list_keys(world.org_id, include_revoked=False, limit=50, offset=0)
    assert home_key.row.id in {key.id for key, _ in live.items}


async def test_only_the_platform_admin_creates_and_lists_organisations(world: World) -> None:
    async with world.acting(world.owner) as admin:
        assert await admin.is_platform_admin()
        acme, _ = await admin.create_org("Acme")
    acme_owner = Principal(org_id=acme.id, user_id=world.owner.user_id, role="owner")
    home_admin = await world.person("admin")
    co_owner = await world.person("owner")
    scoped_owner = Principal(org_id=world.org_id, user_id=world.owner.user_id, role="owner", division_id="d" * 32)
    for actor in (acme_owner, home_admin, scoped_owner):
        async with world.acting(actor) as admin:
            assert not await admin.is_platform_admin()
        with pytest.raises(Forbidden):
            async with world.acting(actor) as admin:
                await admin.create_org("Rogue")
        with pytest.raises(Forbidden):
            async with world.acting(actor) as admin:
                await admin.list_orgs(limit=10, offset=0)
    async with world.acting(co_owner) as admin:  # any unscoped owner of the first org
        page = await admin.list_orgs(limit=1, offset=0)
        assert [org.id for org in page.items] == [world.org_id] and page.next_offset == 1
    # The creator owns the new org through a membership, and the creation is audited at home.
    async with world.acting(acme_owner) as admin:
        assert world.owner.user_id is not None
        creator = await admin.get_user(acme.id, world.owner.user_id)
    assert creator.membership.role == "owner" and creator.user.org_id == world.org_id
    assert "org.create" in await world.actions(world.org_id)
    assert await world.actions(acme.id) == ["membership.add"]


async def test_a_division_scoped_admin_manages_only_its_division(world: World) -> None:
    async with world.acting(world.owner) as admin:
        north = await admin.create_division(world.org_id, "North")
        south = await admin.create_division(world.org_id, "South")
        south_key = await admin.create_key(world.org_id, KeySpec(name="south", division_id=south.id))
        south_user = await admin.create_user(world.org_id, email="s@example.org", name="S", role="member",
                                             division_id=south.id)
    scoped = await world.person("admin", division_id=north.id)
    async with world.acting(scoped) as admin:
        created = await admin.create_key(world.org_id, KeySpec(name="north"))
        assert created.row.division_id == north.id  # forced into the actor's division
        listed = await admin.list_keys(world.org_id, include_revoked=True, limit=50, offset=0)
        assert {key.division_id for key, _ in listed.items} == {north.id}
        users = await admin.list_users(world.org_id, service=False, limit=50, offset=0)
        assert {m.membership.division_id for m in users.items} == {north.id}
        divisions = await admin.list_divisions(world.org_id, limit=50, offset=0)
        assert [d.id for d in divisions.items] == [north.id]
        bot = await admin.create_service_account(world.org_id, name="north bot", role="member")
        assert bot.membership.division_id == north.id
    for attempt, error in (
        (lambda a: a.revoke_key(world.org_id, south_key.row.id), NotFound),
        (lambda a: a.rotate_key(world.org_id, south_key.row.id), NotFound),
        (lambda a: a.create_key(world.org_id, KeySpec(name="x", division_id=south.id)), Forbidden),
        (lambda a: a.get_user(world.org_id, south_user.user.id), NotFound),
        (lambda a: a.update_user(world.org_id, scoped.user_id, UserChanges(division_id=south.id,
                                                                           set_division=True)), Forbidden),
        (lambda a: a.create_division(world.org_id, "West"), Forbidden),
        (lambda a: a.delete_division(world.org_id, north.id), Forbidden),
        (lambda a: a.list_audit(world.org_id, action=None, before=None, limit=10), Forbidden),
    ):
        with pytest.raises(error):
            async with world.acting(scoped) as admin:
                await attempt(admin)
