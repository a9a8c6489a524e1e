"""Membership by invitation (issue 11 item 3): nothing changes until the invitee accepts, the answer never
tells whether an email exists, the owner role is never offered, division admins invite into their
division, and every step is audited in the inviting organisation."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from atrium.accounts.admin import UserChanges
from atrium.accounts.invitations import INVITATION_TTL, invitation_view
from atrium.accounts.principal import Principal
from atrium.errors import Conflict, Forbidden, InvalidRequest, NotFound
from atrium.store.models import Invitation, Membership, utcnow
from tests.unit.accounts.admin_helpers import World, world

__all__ = ["world"]


async def _acme(world: World) -> tuple[str, Principal]:
    async with world.acting(world.owner) as admin:
        acme, _ = await admin.create_org("Acme")
    return acme.id, Principal(org_id=acme.id, user_id=world.owner.user_id, role="owner")


async def _seats(world: World, user_id: str | None) -> set[str]:
    async with world.db.system_session() as session:
        return set((await session.scalars(select(Membership.org_id).where(Membership.user_id == user_id))).all())


def _shape(view: dict[str, object]) -> tuple[object, ...]:
    """What an answer shows besides the per-invitation values (id, email, times)."""
    return tuple(sorted(view)), view["role"], view["status"], view["division_id"], view["answered_at"]


async def test_an_invitation_answers_alike_for_any_email_and_changes_nothing_until_accepted(world: World) -> None:
    acme, acme_owner = await _acme(world)
    ada = await world.person("member", email="ada@example.org")
    gone = await world.person("member", email="gone@example.org")
    assert gone.user_id is not None
    async with world.acting(world.owner) as admin:
        await admin.update_user(world.org_id, gone.user_id, UserChanges(disabled=True))
    views = []
    for email in ("ada@example.org", "nobody@example.org", "gone@example.org"):
        async with world.acting(acme_owner) as admin:
            views.append(invitation_view(await admin.add_membership(acme, email=email, role="admin")))
    assert len({_shape(view) for view in views}) == 1, views
    assert views[0]["status"] == "pending"
    assert await _seats(world, ada.user_id) == {world.org_id}  # not a member until she accepts
    events = [e for e in await world.audit(acme) if e.action == "invitation.create"]
    assert [e.details["email"] for e in events if e.details] == [
        "ada@example.org", "nobody@example.org", "gone@example.org"]


async def test_the_invitee_lists_accepts_or_declines_and_each_step_is_audited(world: World) -> None:
    acme, acme_owner = await _acme(world)
    async with world.acting(acme_owner) as admin:
        division = await admin.create_division(acme, "Lab")
        offer = await admin.invite(acme, email="ADA@example.org", role="admin", division_id=division.id)
    ada = await world.person("member", email="ada@example.org")
    async with world.answering(ada) as inbox:
        [(listed, org_name, division_name)] = await inbox.mine()
    assert (listed.id, org_name, division_name, listed.role) == (offer.id, "Acme", "Lab", "admin")
    # Somebody else, or a key that is no user, cannot see or answer it.
    bob = await world.person("admin", email="bob@example.org")
    async with world.answering(bob) as inbox:
        assert await inbox.mine() == []
    for outsider in (bob, Principal(org_id=world.org_id, user_id=None, role="owner", api_key_id="x" * 32)):
        with pytest.raises(NotFound if outsider.user_id else Forbidden):
            async with world.answering(outsider) as inbox:
                await inbox.accept(offer.id)
    async with world.answering(ada) as inbox:
        accepted, membership = await inbox.accept(offer.id)
        assert inbox.stale_users == [ada.user_id]
    assert (accepted.status, membership.role, membership.division_id) == ("accepted", "admin", division.id)
    assert await _seats(world, ada.user_id) == {world.org_id, acme}
    with pytest.raises(Conflict, match="accepted"):
        async with world.answering(ada) as inbox:
            await inbox.accept(offer.id)
    # A second invitation, declined.
    async with world.acting(acme_owner) as admin:
        second = await admin.invite(acme, email="bob@example.org", role="viewer")
    async with world.answering(bob) as inbox:
        declined = await inbox.decline(second.id)
    assert declined.status == "declined" and declined.answered_at is not None
    assert acme not in await _seats(world, bob.user_id)
    acme_events = await world.audit(acme)
    assert [e.action for e in acme_events if e.action.startswith(("invitation.", "membership."))] == [
        "membership.add", "invitation.create", "invitation.accept", "membership.add", "invitation.create",
        "invitation.decline"]
    accept = next(e for e in acme_events if e.action == "invitation.accept")
    assert (accept.actor_user_id, accept.target_id, accept.ip) == (ada.user_id, offer.id, "192.0.2.2")


async def test_expired_revoked_and_superseded_invitations_cannot_be_accepted(world: World) -> None:
    acme, acme_owner = await _acme(world)
    ada = await world.person("member", email="ada@example.org")
    async with world.acting(acme_owner) as admin:
        old = await admin.invite(acme, email="ada@example.org", role="viewer")
        assert old.expires_at - old.created_at == INVITATION_TTL
        new = await admin.invite(acme, email="ada@example.org", role="member")  # supersedes the first
    async with world.answering(ada) as inbox:
        assert [item.id for item, _, _ in await inbox.mine()] == [new.id]
    with pytest.raises(Conflict, match="revoked"):
        async with world.answering(ada) as inbox:
            await inbox.accept(old.id)
    async with world.db.system_session() as session:
        await session.execute(update(Invitation).where(Invitation.id == new.id)
                              .values(expires_at=utcnow() - timedelta(seconds=1)))
    async with world.answering(ada) as inbox:
        assert await inbox.mine() == []
    with pytest.raises(Conflict, match="expired"):
        async with world.answering(ada) as inbox:
            await inbox.accept(new.id)
    async with world.acting(acme_owner) as admin:
        expired = await admin.list_invitations(acme, status="expired", limit=10, offset=0)
        assert [item.id for item in expired.items] == [new.id]
        third = await admin.invite(acme, email="ada@example.org", role="member")
        await admin.revoke_invitation(acme, third.id)
        await admin.revoke_invitation(acme, third.id)  # idempotent
    with pytest.raises(Conflict, match="revoked"):
        async with world.answering(ada) as inbox:
            await inbox.accept(third.id)
    assert [a for a in await world.actions(acme) if a == "invitation.revoke"] == ["invitation.revoke"]
    assert await _seats(world, ada.user_id) == {world.org_id}


async def test_what_cannot_be_offered(world: World) -> None:
    acme, acme_owner = await _acme(world)
    acme_admin = Principal(org_id=acme, user_id=None, role="admin", api_key_id="a" * 32)
    member = Principal(org_id=acme, user_id=None, role="member", api_key_id="m" * 32)
    for actor, call, error in (
        (acme_owner, lambda a: a.invite(acme, email="x@example.org", role="owner"), Forbidden),
        (acme_admin, lambda a: a.invite(acme, email="x@example.org", role="owner"), Forbidden),
        (member, lambda a: a.invite(acme, email="x@example.org", role="viewer"), Forbidden),
        (acme_owner, lambda a: a.invite(acme, email="svc-1@service.local", role="viewer"), InvalidRequest),
        (acme_owner, lambda a: a.invite(acme, email="not an email", role="viewer"), InvalidRequest),
        (acme_owner, lambda a: a.invite(world.org_id, email="x@example.org", role="viewer"), NotFound),
        (acme_owner, lambda a: a.invite(acme, email="x@example.org", role="viewer", division_id="nope"),
         NotFound),
    ):
        with pytest.raises(error):
            async with world.acting(actor) as admin:
                await call(admin)
    async with world.acting(acme_owner) as admin:
        assert not (await admin.list_invitations(acme, status=None, limit=10, offset=0)).items


async def test_a_division_admin_invites_into_and_sees_only_its_division(world: World) -> None:
    async with world.acting(world.owner) as admin:
        one = await admin.create_division(world.org_id, "One")
        two = await admin.create_division(world.org_id, "Two")
    scoped = Principal(org_id=world.org_id, user_id=None, role="admin", division_id=one.id, api_key_id="d" * 32)
    async with world.acting(scoped) as admin:
        mine = await admin.invite(world.org_id, email="x@example.org", role="member")
    assert mine.division_id == one.id
    with pytest.raises(Forbidden):
        async with world.acting(scoped) as admin:
            await admin.invite(world.org_id, email="y@example.org", role="member", division_id=two.id)
    async with world.acting(world.owner) as admin:
        theirs = await admin.invite(world.org_id, email="z@example.org", role="member", division_id=two.id)
    async with world.acting(scoped) as admin:
        listed = await admin.list_invitations(world.org_id, status=None, limit=10, offset=0)
        assert [item.id for item in listed.items] == [mine.id]
    with pytest.raises(NotFound):
        async with world.acting(scoped) as admin:
            await admin.revoke_invitation(world.org_id, theirs.id)
    # A member of another division is not listed by this admin: inviting them reveals nothing either.
    await world.person("member", email="two@example.org", division_id=two.id)
    async with world.acting(scoped) as admin:
        await admin.invite(world.org_id, email="two@example.org", role="member")
    with pytest.raises(Conflict, match="already a member"):  # the owner lists them
        async with world.acting(world.owner) as admin:
            await admin.invite(world.org_id, email="two@example.org", role="member")
