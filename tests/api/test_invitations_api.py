"""Invitations over HTTP (issue 11 item 3): an organisation offers a role, the user accepts or declines;
no organisation adds another's user by itself or makes it an owner; the answer never tells whether an
email exists; the home organisation keeps managing its own user; every step is audited."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from atrium.accounts.api_keys import create_key
from atrium.store.models import AuditEvent, Invitation, Organization, utcnow
from tests.api.test_accounts_api import ADMIN, PROBE, as_caller, error_of, login_token, new_key, new_user, ok
from tests.conftest import RunningApp

PASSWORD = "a correct horse battery"
MINE = "/api/v1/invitations"


async def acme(app: RunningApp) -> dict[str, Any]:
    """A second organisation (created by the platform admin, who is its owner), with an owner key."""
    return ok(await app.client.post(f"{ADMIN}/orgs", json={"name": "Acme", "owner_key": True}), 201)


async def key_without_user(app: RunningApp) -> str:
    """A key of the first organisation acting as no user (``atrium keys create`` without ``--user``)."""
    async with app.services.db.system_session() as session:
        org_id = await session.scalar(select(Organization.id).order_by(Organization.created_at).limit(1))
        _, raw = await create_key(session, org_id=str(org_id), user_id=None, role="admin", name="no user")
    return raw


async def actions(app: RunningApp, org_id: str) -> list[str]:
    async with app.services.db.system_session() as session:
        return list((await session.scalars(select(AuditEvent.action).where(AuditEvent.org_id == org_id)
                                           .order_by(AuditEvent.id))).all())


async def test_an_invitation_never_tells_whether_the_email_exists(running: RunningApp) -> None:
    admin = running.client
    await new_user(admin, "ada@example.org", "member")
    gone = await new_user(admin, "gone@example.org", "member")
    ok(await admin.patch(f"{ADMIN}/users/{gone['id']}", json={"disabled": True}))
    org = await acme(running)
    async with as_caller(running, org["owner_key"]["key"]) as acme_client:
        answers = []
        for path in ("/memberships", "/invitations"):
            for email in ("ada@example.org", "nobody@example.org", "gone@example.org"):
                response = await acme_client.post(ADMIN + path, json={"email": email, "role": "admin"})
                assert response.status_code == 202, response.text
                body = response.json()
                answers.append((tuple(sorted(body)), body["status"], body["role"], body["division_id"],
                                body["answered_at"], len(response.content) - len(email) - len(body["id"])))
        assert len({answer[:5] for answer in answers}) == 1, answers
        assert len({answer[5] for answer in answers}) == 1, answers  # the same length, values aside
        assert answers[0][1:3] == ("pending", "admin")
        # Nobody was added: Acme lists only its owner.
        users = ok(await acme_client.get(f"{ADMIN}/users"))
        assert [u["email"] for u in users["users"]] == ["admin@localhost"]
        # The owner role is never offered, to anyone.
        for email in ("ada@example.org", "nobody@example.org"):
            refused = error_of(await acme_client.post(f"{ADMIN}/invitations",
                                                      json={"email": email, "role": "owner"}), 403)
            assert refused["code"] == "forbidden" and email not in refused["message"]


async def test_the_invitee_accepts_with_any_credential_of_their_user(running: RunningApp) -> None:
    admin = running.client
    ada = await new_user(admin, "ada@example.org", "member", password=PASSWORD)
    org = await acme(running)
    async with as_caller(running, org["owner_key"]["key"]) as acme_client:
        lab = ok(await acme_client.post(f"{ADMIN}/divisions", json={"name": "Lab"}), 201)
        offer = ok(await acme_client.post(f"{ADMIN}/invitations", json={
            "email": "Ada@Example.org", "role": "admin", "division_id": lab["id"]}), 202)
        assert (offer["email"], offer["division_id"]) == ("ada@example.org", lab["id"])
        token = await login_token(running, "ada@example.org", PASSWORD)
        async with as_caller(running, token) as ada_client:
            [listed] = ok(await ada_client.get(MINE))["invitations"]
            assert (listed["id"], listed["org_name"], listed["division_name"], listed["role"]) == (
                offer["id"], "Acme", "Lab", "admin")
            # Not a member of Acme until she accepts: no login there.
            error_of(await admin.post("/api/v1/auth/token", json={
                "email": "ada@example.org", "password": PASSWORD, "org_id": org["id"]}), 403)
            accepted = ok(await ada_client.post(f"{MINE}/{offer['id']}/accept"))
            assert accepted["membership"] == {"org_id": org["id"], "role": "admin", "division_id": lab["id"]}
            error_of(await ada_client.post(f"{MINE}/{offer['id']}/accept"), 409)
            assert ok(await ada_client.get(MINE))["invitations"] == []
        member = ok(await acme_client.get(f"{ADMIN}/users/{ada['id']}"))
        assert (member["role"], member["division_id"], member["home_org"]) == ("admin", lab["id"], False)
        listed_by_acme = ok(await acme_client.get(f"{ADMIN}/invitations"))["invitations"]
        assert [(i["id"], i["status"]) for i in listed_by_acme] == [(offer["id"], "accepted")]
        acme_token = await login_token(running, "ada@example.org", PASSWORD, org_id=org["id"])
        async with as_caller(running, acme_token) as ada_at_acme:
            assert ok(await ada_at_acme.get(f"{ADMIN}/org"))["division_id"] == lab["id"]
    assert await actions(running, org["id"]) == [
        "membership.add", "key.create", "division.create", "invitation.create", "invitation.accept",
        "membership.add", "auth.login"]


async def test_others_cannot_see_or_answer_an_invitation(running: RunningApp) -> None:
    admin = running.client
    ada = await new_user(admin, "ada@example.org", "member")
    bob = await new_user(admin, "bob@example.org", "admin")
    ada_key, bob_key = await new_key(admin, user_id=ada["id"]), await new_key(admin, user_id=bob["id"])
    userless = await key_without_user(running)
    org = await acme(running)
    async with as_caller(running, org["owner_key"]["key"]) as acme_client:
        offer = ok(await acme_client.post(f"{ADMIN}/invitations", json={"email": "ada@example.org"}), 202)
        async with as_caller(running, bob_key["key"]) as bob_client:
            assert ok(await bob_client.get(MINE))["invitations"] == []
            for verb in ("accept", "decline"):
                error_of(await bob_client.post(f"{MINE}/{offer['id']}/{verb}"), 404)
            # Another organisation's admin does not see or revoke Acme's invitations.
            assert offer["id"] not in str(ok(await bob_client.get(f"{ADMIN}/invitations")))
            error_of(await bob_client.delete(f"{ADMIN}/invitations/{offer['id']}"), 404)
        async with as_caller(running, userless) as key_client:
            error_of(await key_client.get(MINE), 403)
            error_of(await key_client.post(f"{MINE}/{offer['id']}/accept"), 403)
        async with as_caller(running, "") as anonymous:
            error_of(await anonymous.get(MINE), 401)
        async with as_caller(running, ada_key["key"]) as ada_client:
            declined = ok(await ada_client.post(f"{MINE}/{offer['id']}/decline"))
            assert declined["status"] == "declined"
            error_of(await ada_client.post(f"{MINE}/{offer['id']}/accept"), 409)
        # Revoked and expired invitations cannot be accepted either.
        second = ok(await acme_client.post(f"{ADMIN}/invitations", json={"email": "ada@example.org"}), 202)
        ok(await acme_client.delete(f"{ADMIN}/invitations/{second['id']}"), 204)
        ok(await acme_client.delete(f"{ADMIN}/invitations/{second['id']}"), 204)
        third = ok(await acme_client.post(f"{ADMIN}/invitations", json={"email": "ada@example.org"}), 202)
        async with running.services.db.system_session() as session:
            await session.execute(update(Invitation).where(Invitation.id == third["id"])
                                  .values(expires_at=utcnow()))
        async with as_caller(running, ada_key["key"]) as ada_client:
            assert ok(await ada_client.get(MINE))["invitations"] == []
            for invitation in (second, third):
                error_of(await ada_client.post(f"{MINE}/{invitation['id']}/accept"), 409)
        statuses = {i["id"]: i["status"] for i in ok(await acme_client.get(f"{ADMIN}/invitations"))["invitations"]}
        assert statuses == {offer["id"]: "declined", second["id"]: "revoked", third["id"]: "expired"}
        error_of(await acme_client.delete(f"{ADMIN}/invitations/{offer['id']}"), 409)  # answered already
        expired = ok(await acme_client.get(f"{ADMIN}/invitations", params={"status": "expired"}))
        assert [i["id"] for i in expired["invitations"]] == [third["id"]]
    assert [a for a in await actions(running, org["id"]) if a.startswith("invitation.")] == [
        "invitation.create", "invitation.decline", "invitation.create", "invitation.revoke", "invitation.create"]


async def test_the_home_org_keeps_managing_its_user_and_no_other_org_makes_them_owner(running: RunningApp) -> None:
    """The platform owner is Acme's only owner (Acme's creator); the first organisation can still disable
    and delete them. A user who joined Acme by invitation can never be made Acme's owner."""
    admin = running.client
    ada = await new_user(admin, "ada@example.org", "member")
    ada_key = await new_key(admin, user_id=ada["id"])
    org = await acme(running)
    async with as_caller(running, org["owner_key"]["key"]) as acme_client:
        offer = ok(await acme_client.post(f"{ADMIN}/memberships", json={"email": "ada@example.org"}), 202)
        async with as_caller(running, ada_key["key"]) as ada_client:
            ok(await ada_client.post(f"{MINE}/{offer['id']}/accept"))
        refused = error_of(await acme_client.patch(f"{ADMIN}/users/{ada['id']}", json={"role": "owner"}), 403)
        assert refused["code"] == "forbidden"
        ok(await acme_client.patch(f"{ADMIN}/users/{ada['id']}", json={"role": "admin"}))
    # At home, a co-owner can disable and delete the platform owner, though Acme has no other owner.
    co_owner = await new_user(admin, "co@example.org", "owner")
    co_key = await new_key(admin, user_id=co_owner["id"])
    users = ok(await admin.get(f"{ADMIN}/users"))["users"]
    platform_owner = next(u for u in users if u["email"] == "admin@localhost")
    async with as_caller(running, co_key["key"]) as co_client:
        ok(await co_client.patch(f"{ADMIN}/users/{platform_owner['id']}", json={"disabled": True}))
        ok(await co_client.get(PROBE))
        error_of(await co_client.patch(f"{ADMIN}/users/{co_owner['id']}", json={"disabled": True}), 409)


async def test_a_division_admin_invites_only_into_its_division(running: RunningApp) -> None:
    admin = running.client
    north = ok(await admin.post(f"{ADMIN}/divisions", json={"name": "North"}), 201)
    south = ok(await admin.post(f"{ADMIN}/divisions", json={"name": "South"}), 201)
    lead = await new_user(admin, "lead@example.org", "admin", division_id=north["id"])
    lead_key = await new_key(admin, user_id=lead["id"])
    theirs = ok(await admin.post(f"{ADMIN}/invitations", json={"email": "s@example.org",
                                                                "division_id": south["id"]}), 202)
    async with as_caller(running, lead_key["key"]) as lead_client:
        mine = ok(await lead_client.post(f"{ADMIN}/invitations", json={"email": "n@example.org"}), 202)
        assert mine["division_id"] == north["id"]
        error_of(await lead_client.post(f"{ADMIN}/invitations", json={"email": "x@example.org",
                                                                       "division_id": south["id"]}), 403)
        listed = ok(await lead_client.get(f"{ADMIN}/invitations"))["invitations"]
        assert [i["id"] for i in listed] == [mine["id"]]
        error_of(await lead_client.delete(f"{ADMIN}/invitations/{theirs['id']}"), 404)
        ok(await lead_client.delete(f"{ADMIN}/invitations/{mine['id']}"), 204)
    member = await new_user(admin, "member@example.org", "member")
    member_key = await new_key(admin, user_id=member["id"])
    async with as_caller(running, member_key["key"]) as member_client:
        for method, path in (("POST", "/invitations"), ("GET", "/invitations"),
                             ("DELETE", f"/invitations/{theirs['id']}")):
            body = {"email": "y@example.org"} if method == "POST" else None
            error_of(await member_client.request(method, ADMIN + path, json=body), 403)
