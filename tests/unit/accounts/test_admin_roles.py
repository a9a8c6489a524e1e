"""Who may do what: viewers and members administer nothing, admins never reach the owner role, no
organisation loses its last owner, nothing is granted above the granter's role."""

from __future__ import annotations

import pytest

from atrium.accounts.admin import KeySpec, UserChanges
from atrium.accounts.principal import Principal
from atrium.errors import Conflict, Forbidden, InvalidRequest
from tests.unit.accounts.admin_helpers import World, world

__all__ = ["world"]


@pytest.mark.parametrize("role", ["viewer", "member"])
async def test_viewers_and_members_administer_nothing(world: World, role: str) -> None:
    actor = await world.person(role)  # type: ignore[arg-type]
    calls = [
        lambda a: a.create_division(world.org_id, "Sales"),
        lambda a: a.list_users(world.org_id, service=False, limit=10, offset=0),
        lambda a: a.create_user(world.org_id, email="x@example.org", name="X", role="viewer"),
        lambda a: a.create_key(world.org_id, KeySpec(name="mine")),
        lambda a: a.list_keys(world.org_id, include_revoked=True, limit=10, offset=0),
        lambda a: a.list_audit(world.org_id, action=None, before=None, limit=10),
        lambda a: a.create_service_account(world.org_id, name="bot", role="viewer"),
    ]
    before = await world.actions()
    for call in calls:
        with pytest.raises(Forbidden, match="admin role"):
            async with world.acting(actor) as admin:
                await call(admin)
    assert await world.actions() == before


async def test_an_admin_cannot_grant_the_owner_role_or_touch_an_owner(world: World) -> None:
    admin_actor = await world.person("admin")
    other_owner = await world.person("owner")
    async with world.acting(admin_actor) as admin:
        member = await admin.create_user(world.org_id, email="m@example.org", name="M", role="member")
    for attempt in (
        lambda a: a.create_user(world.org_id, email="o@example.org", name="O", role="owner"),
        lambda a: a.update_user(world.org_id, member.user.id, UserChanges(role="owner")),
        lambda a: a.update_user(world.org_id, other_owner.user_id, UserChanges(role="member")),
        lambda a: a.update_user(world.org_id, other_owner.user_id, UserChanges(disabled=True)),
        lambda a: a.update_user(world.org_id, other_owner.user_id, UserChanges(name="Renamed")),
        lambda a: a.delete_user(world.org_id, other_owner.user_id),
        lambda a: a.create_key(world.org_id, KeySpec(name="for the owner", user_id=other_owner.user_id,
                                                     role="member")),
    ):
        with pytest.raises(Forbidden):
            async with world.acting(admin_actor) as admin:
                await attempt(admin)
    # ...while admins manage everyone else, admins included.
    async with world.acting(admin_actor) as admin:
        promoted = await admin.update_user(world.org_id, member.user.id, UserChanges(role="admin"))
    assert promoted.membership.role == "admin"


async def test_only_an_owner_grants_and_revokes_the_owner_role(world: World) -> None:
    async with world.acting(world.owner) as admin:
        member = await admin.create_user(world.org_id, email="co@example.org", name="Co", role="member")
        await admin.update_user(world.org_id, member.user.id, UserChanges(role="owner"))
    async with world.acting(world.owner) as admin:
        again = await admin.get_user(world.org_id, member.user.id)
        assert again.membership.role == again.user.role == "owner"
        await admin.update_user(world.org_id, member.user.id, UserChanges(role="viewer"))
    events = [e for e in await world.audit(world.org_id) if e.action == "role.change"]
    assert [(e.details or {}).get("old_role") for e in events] == ["member", "owner"]
    assert [(e.details or {}).get("new_role") for e in events] == ["owner", "viewer"]


async def test_nobody_removes_the_last_owner(world: World) -> None:
    owner_id = world.owner.user_id
    assert owner_id is not None
    for attempt in (
        lambda a: a.update_user(world.org_id, owner_id, UserChanges(role="admin")),
        lambda a: a.update_user(world.org_id, owner_id, UserChanges(disabled=True)),
        lambda a: a.delete_user(world.org_id, owner_id),
    ):
        with pytest.raises(Conflict, match="at least one active owner"):
            async with world.acting(world.owner) as admin:
                await attempt(admin)
    # A disabled co-owner does not count: the org still has only one active owner.
    co_owner = await world.person("owner")
    assert co_owner.user_id is not None
    async with world.acting(world.owner) as admin:
        await admin.update_user(world.org_id, co_owner.user_id, UserChanges(disabled=True))
    with pytest.raises(Conflict):
        async with world.acting(world.owner) as admin:
            await admin.update_user(world.org_id, owner_id, UserChanges(role="member"))
    # With an active co-owner, the first owner may step down.
    async with world.acting(world.owner) as admin:
        await admin.update_user(world.org_id, co_owner.user_id, UserChanges(disabled=False))
        stepped = await admin.update_user(world.org_id, owner_id, UserChanges(role="member"))
    assert stepped.membership.role == "member"


async def test_another_org_cannot_block_the_home_org_from_disabling_or_deleting_its_user(world: World) -> None:
    """The platform owner created Acme and is its only owner; at home, a co-owner can still disable and
    delete them: only the home organisation's last-owner rule applies (issue 11 item 3)."""
    async with world.acting(world.owner) as admin:
        org, _ = await admin.create_org("Acme")
    co_owner = await world.person("owner")
    assert world.owner.user_id is not None
    async with world.acting(co_owner) as admin:
        disabled = await admin.update_user(world.org_id, world.owner.user_id, UserChanges(disabled=True))
        assert disabled.user.disabled_at is not None
    async with world.acting(co_owner) as admin:
        assert await admin.delete_user(world.org_id, world.owner.user_id) == "deleted"
    # The home organisation's own rule still holds: its last active owner cannot go.
    assert co_owner.user_id is not None
    with pytest.raises(Conflict, match="at least one active owner"):
        async with world.acting(co_owner) as admin:
            await admin.update_user(world.org_id, co_owner.user_id, UserChanges(disabled=True))
    assert org.id


async def test_disabling_or_deleting_a_non_owner_needs_no_other_owner(world: World) -> None:
    member = await world.person("member")
    assert member.user_id is not None
    async with world.acting(world.owner) as admin:
        await admin.update_user(world.org_id, member.user_id, UserChanges(disabled=True))
        assert await admin.delete_user(world.org_id, member.user_id) == "deleted"


async def test_the_owner_role_goes_only_to_a_user_whose_home_is_the_org(world: World) -> None:
    async with world.acting(world.owner) as admin:
        acme, _ = await admin.create_org("Acme")
    acme_owner = Principal(org_id=acme.id, user_id=world.owner.user_id, role="owner")
    ada = await world.person("member", email="ada-owner@example.org")
    assert ada.user_id is not None
    with pytest.raises(Forbidden, match="owner role cannot be offered"):
        async with world.acting(acme_owner) as admin:
            await admin.invite(acme.id, email="ada-owner@example.org", role="owner")
    await world.join(acme_owner, ada, "ada-owner@example.org", "admin")
    with pytest.raises(Forbidden, match="home is this organisation"):
        async with world.acting(acme_owner) as admin:
            await admin.update_user(acme.id, ada.user_id, UserChanges(role="owner"))
    async with world.acting(world.owner) as admin:  # at home she can be made an owner
        promoted = await admin.update_user(world.org_id, ada.user_id, UserChanges(role="owner"))
    assert promoted.membership.role == "owner"


async def test_a_key_never_outranks_its_creator_or_its_user(world: World) -> None:
    admin_actor = await world.person("admin")
    viewer = await world.person("viewer")
    with pytest.raises(Forbidden, match="above yours"):
        async with world.acting(admin_actor) as admin:
            await admin.create_key(world.org_id, KeySpec(name="too strong", role="owner"))
    with pytest.raises(InvalidRequest, match="viewer"):
        async with world.acting(admin_actor) as admin:
            await admin.create_key(world.org_id, KeySpec(name="escalation", user_id=viewer.user_id, role="admin"))
    async with world.acting(admin_actor) as admin:
        default = await admin.create_key(world.org_id, KeySpec(name="viewer key", user_id=viewer.user_id))
        own = await admin.create_key(world.org_id, KeySpec(name="own key"))
    assert default.row.role == "viewer"
    assert (own.row.role, own.row.user_id) == ("admin", admin_actor.user_id)
    # An owner acting through an admin key is an admin here.
    weaker = Principal(org_id=world.org_id, user_id=world.owner.user_id, role="admin")
    with pytest.raises(Forbidden):
        async with world.acting(weaker) as admin:
            await admin.create_key(world.org_id, KeySpec(name="x", role="owner"))


async def test_demoting_a_user_lowers_their_keys(world: World) -> None:
    admin_user = await world.person("admin")
    async with world.acting(world.owner) as admin:
        created = await admin.create_key(world.org_id, KeySpec(name="k", user_id=admin_user.user_id))
        assert created.row.role == "admin"
        assert admin_user.user_id is not None
        await admin.update_user(world.org_id, admin_user.user_id, UserChanges(role="member"))
        # The user is announced (their cached keys go), not the key: announcing it as revoked would have every
        # replica refuse the lowered key until the cache TTL.
        assert (admin.stale_keys, admin.stale_users) == ([], [admin_user.user_id])
    async with world.acting(world.owner) as admin:
        page = await admin.list_keys(world.org_id, include_revoked=False, limit=50, offset=0)
    assert {key.id: key.role for key, _ in page.items}[created.row.id] == "member"
    change = [e for e in await world.audit() if e.action == "role.change"][-1]
    assert change.details is not None and change.details["keys_lowered"] == 1


async def test_service_accounts_cannot_be_owners_or_outrank_their_creator(world: World) -> None:
    admin_actor = await world.person("admin")
    with pytest.raises(InvalidRequest):
        async with world.acting(world.owner) as admin:
            await admin.create_service_account(world.org_id, name="root bot", role="owner")
    async with world.acting(admin_actor) as admin:
        bot = await admin.create_service_account(world.org_id, name="ci bot", role="admin")
    assert bot.user.is_service and bot.user.password_hash is None
    assert bot.user.email == f"svc-{bot.user.id}@service.local"
    with pytest.raises(InvalidRequest):
        async with world.acting(world.owner) as admin:
            await admin.update_user(world.org_id, bot.user.id, UserChanges(role="owner"))
    with pytest.raises(InvalidRequest, match="no password"):
        async with world.acting(world.owner) as admin:
            await admin.update_user(world.org_id, bot.user.id, UserChanges(password="a-long-password"))
