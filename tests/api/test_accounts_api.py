"""The account admin API over the running app: keys that work and die at once, role rules, tenants that
cannot see each other, typed errors, and an audit trail without secrets. The last test runs the
cross-tenant paths on PostgreSQL as a normal role, under Row-Level Security."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from blockbuster import BlockBuster
from sqlalchemy import select

from atrium.accounts.api_keys import hash_key
from atrium.store.models import AuditEvent
from tests.conftest import ADMIN_KEY, RunningApp, make_settings, run_app
from tests.postgres_fixtures import PostgresServer
from tests.tenancy_helpers import database_with_app_role

ADMIN = "/api/v1/admin"
PROBE = "/api/v1/conversations"  # any authenticated endpoint


@asynccontextmanager
async def as_caller(app: RunningApp, credential: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app.app), base_url="http://atrium.test",
                                 headers={"Authorization": f"Bearer {credential}"}) as client:
        yield client


def ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    return response.json() if response.content else {}


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message", "request_id"}
    return error


async def new_user(client: httpx.AsyncClient, email: str, role: str, **extra: Any) -> dict[str, Any]:
    return ok(await client.post(f"{ADMIN}/users", json={"email": email, "name": email.split("@")[0],
                                                               "role": role, **extra}), 201)


async def new_key(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    return ok(await client.post(f"{ADMIN}/keys", json={"name": "test key", **body}), 201)


async def accept(app: RunningApp, credential: str, invitation_id: str) -> dict[str, Any]:
    """The invitee (with ``credential``, any of their user's) accepts the invitation."""
    async with as_caller(app, credential) as invitee:
        return ok(await invitee.post(f"/api/v1/invitations/{invitation_id}/accept"))


async def all_audit_text(app: RunningApp) -> list[str]:
    async with app.services.db.system_session() as session:
        rows = (await session.scalars(select(AuditEvent))).all()
    return [" ".join(str(getattr(row, column.key)) for column in AuditEvent.__table__.columns) for row in rows]


async def test_a_new_key_works_at_once_and_is_refused_at_once_after_revocation(running: RunningApp) -> None:
    admin = running.client
    user = await new_user(admin, "dev@example.org", "member")
    created = await new_key(admin, user_id=user["id"], expires_in_days=30, requests_per_minute=100)
    assert created["key"].startswith(created["prefix"]) and created["role"] == "member"
    async with as_caller(running, created["key"]) as dev:
        ok(await dev.get(PROBE))  # authenticated, and now cached by the authenticator
        ok(await admin.delete(f"{ADMIN}/keys/{created['id']}"), 204)
        error = error_of(await dev.get(PROBE), 401)
        assert created["key"] not in error["message"]
    listed = ok(await admin.get(f"{ADMIN}/keys", params={"include_revoked": "true"}))
    entry = next(key for key in listed["keys"] if key["id"] == created["id"])
    assert entry["revoked_at"] is not None and entry["requests_per_minute"] == 100
    assert "key" not in entry and created["key"] not in str(listed) and hash_key(created["key"]) not in str(listed)
    active = ok(await admin.get(f"{ADMIN}/keys"))
    assert created["id"] not in {key["id"] for key in active["keys"]}


async def test_rotation_swaps_the_keys_at_once(running: RunningApp) -> None:
    admin = running.client
    old = await new_key(admin, role="viewer", tokens_per_minute=900)
    async with as_caller(running, old["key"]) as caller:
        ok(await caller.get(PROBE))
        new = ok(await admin.post(f"{ADMIN}/keys/{old['id']}/rotate"), 201)
        error_of(await caller.get(PROBE), 401)
    assert new["replaces"] == old["id"] and new["key"] != old["key"]
    assert (new["role"], new["tokens_per_minute"], new["name"]) == ("viewer", 900, old["name"])
    async with as_caller(running, new["key"]) as caller:
        ok(await caller.get(PROBE))
    error_of(await admin.post(f"{ADMIN}/keys/{old['id']}/rotate"), 409)


async def test_viewers_members_and_admins_stay_in_their_lane(running: RunningApp) -> None:
    admin = running.client
    for role in ("viewer", "member"):
        user = await new_user(admin, f"{role}@example.org", role)
        key = await new_key(admin, user_id=user["id"])
        async with as_caller(running, key["key"]) as caller:
            assert error_of(await caller.get(f"{ADMIN}/users"), 403)["code"] == "forbidden"
            error_of(await caller.post(f"{ADMIN}/keys", json={"name": "mine"}), 403)
            error_of(await caller.get(f"{ADMIN}/audit"), 403)
    boss = await new_user(admin, "boss@example.org", "admin")
    boss_key = await new_key(admin, user_id=boss["id"])
    owner_id = (ok(await admin.get(f"{ADMIN}/users")))["users"][0]["id"]
    async with as_caller(running, boss_key["key"]) as boss_client:
        error_of(await new_user_raw(boss_client, "owner2@example.org", "owner"), 403)
        error_of(await boss_client.post(f"{ADMIN}/keys", json={"name": "up", "role": "owner"}), 403)
        error_of(await boss_client.patch(f"{ADMIN}/users/{owner_id}", json={"role": "member"}), 403)
        error_of(await boss_client.delete(f"{ADMIN}/users/{owner_id}"), 403)
        error_of(await boss_client.post(f"{ADMIN}/orgs", json={"name": "Mine"}), 403)
        staff = await new_user(boss_client, "staff@example.org", "member")
        ok(await boss_client.patch(f"{ADMIN}/users/{staff['id']}", json={"role": "admin"}))
    error_of(await admin.patch(f"{ADMIN}/users/{owner_id}", json={"role": "admin"}), 409)  # the last owner


async def new_user_raw(client: httpx.AsyncClient, email: str, role: str) -> httpx.Response:
    return await client.post(f"{ADMIN}/users", json={"email": email, "name": "x", "role": role})


async def test_another_tenants_ids_answer_404_and_orgs_are_for_the_platform_admin(running: RunningApp) -> None:
    admin = running.client
    home_user = await new_user(admin, "home@example.org", "member")
    home_key = await new_key(admin, user_id=home_user["id"])
    home_division = ok(await admin.post(f"{ADMIN}/divisions", json={"name": "Home"}), 201)
    acme = ok(await admin.post(f"{ADMIN}/orgs", json={"name": "Acme", "owner_key": True}), 201)
    assert acme["owner_key"]["role"] == "owner"
    async with as_caller(running, acme["owner_key"]["key"]) as acme_client:
        org = ok(await acme_client.get(f"{ADMIN}/org"))
        assert (org["id"], org["role"], org["platform_admin"]) == (acme["id"], "owner", False)
        for method, path, body in (
            ("GET", f"/users/{home_user['id']}", None),
            ("PATCH", f"/users/{home_user['id']}", {"role": "viewer"}),
            ("DELETE", f"/users/{home_user['id']}", None),
            ("DELETE", f"/memberships/{home_user['id']}", None),
            ("DELETE", f"/keys/{home_key['id']}", None),
            ("POST", f"/keys/{home_key['id']}/rotate", None),
            ("DELETE", f"/divisions/{home_division['id']}", None),
            ("POST", "/keys", {"name": "x", "user_id": home_user["id"]}),
            ("POST", "/keys", {"name": "x", "division_id": home_division["id"]}),
        ):
            error = error_of(await acme_client.request(method, ADMIN + path, json=body), 404)
            assert home_user["id"] not in error["message"] and "home@" not in error["message"]
        users = ok(await acme_client.get(f"{ADMIN}/users"))
        assert "home@example.org" not in str(users)
        keys = ok(await acme_client.get(f"{ADMIN}/keys", params={"include_revoked": "true"}))
        assert home_key["id"] not in str(keys)
        audit = ok(await acme_client.get(f"{ADMIN}/audit", params={"limit": 200}))
        assert {event["action"] for event in audit["events"]} == {"membership.add", "key.create"}
        error_of(await acme_client.post(f"{ADMIN}/orgs", json={"name": "Rogue"}), 403)
        error_of(await acme_client.get(f"{ADMIN}/orgs"), 403)
    async with as_caller(running, home_key["key"]) as home_client:
        ok(await home_client.get(PROBE))  # nothing at home was touched
    orgs = ok(await admin.get(f"{ADMIN}/orgs"))
    assert [o["name"] for o in orgs["organizations"]] == ["Admin", "Acme"]


async def test_a_member_of_two_orgs_loses_only_what_one_org_removes(running: RunningApp) -> None:
    admin = running.client
    ada = await new_user(admin, "ada@example.org", "member", password="a correct horse battery")
    home_key = await new_key(admin, user_id=ada["id"])
    acme = ok(await admin.post(f"{ADMIN}/orgs", json={"name": "Acme", "owner_key": True}), 201)
    async with as_caller(running, acme["owner_key"]["key"]) as acme_client:
        invited = ok(await acme_client.post(f"{ADMIN}/memberships",
                                                  json={"email": "ADA@example.org", "role": "admin"}), 202)
        await accept(running, home_key["key"], invited["id"])
        joined = ok(await acme_client.get(f"{ADMIN}/users/{ada['id']}"))
        assert (joined["id"], joined["role"], joined["home_org"]) == (ada["id"], "admin", False)
        error_of(await acme_client.post(f"{ADMIN}/memberships", json={"email": "ada@example.org"}), 409)
        ok(await acme_client.post(f"{ADMIN}/memberships", json={"email": "nobody@example.org"}), 202)
        error_of(await acme_client.patch(f"{ADMIN}/users/{ada['id']}", json={"password": "x" * 12}), 403)
        acme_key = await new_key(acme_client, user_id=ada["id"])
        assert acme_key["role"] == "admin"
        async with as_caller(running, acme_key["key"]) as ada_at_acme:
            ok(await ada_at_acme.get(f"{ADMIN}/org"))
            ok(await acme_client.delete(f"{ADMIN}/memberships/{ada['id']}"), 204)
            error_of(await ada_at_acme.get(PROBE), 401)
    async with as_caller(running, home_key["key"]) as ada_at_home:
        ok(await ada_at_home.get(PROBE))
    error_of(await admin.delete(f"{ADMIN}/memberships/{ada['id']}"), 409)  # her home: delete the user instead


async def test_a_password_user_logs_in_and_disabling_ends_every_credential(running: RunningApp) -> None:
    admin = running.client
    password = "a correct horse battery"
    ada = await new_user(admin, "ada@example.org", "admin", password=password)
    assert ada["has_password"] is True and password not in str(ada)
    key = await new_key(admin, user_id=ada["id"])
    login = ok(await admin.post("/api/v1/auth/token", json={"email": "ada@example.org",
                                                                     "password": password}))
    async with as_caller(running, login["access_token"]) as by_token, as_caller(running, key["key"]) as by_key:
        ok(await by_token.get(f"{ADMIN}/org"))
        ok(await by_key.get(PROBE))
        disabled = ok(await admin.patch(f"{ADMIN}/users/{ada['id']}", json={"disabled": True}))
        assert disabled["disabled"] is True
        error_of(await by_token.get(f"{ADMIN}/org"), 401)
        error_of(await by_key.get(PROBE), 401)
        ok(await admin.patch(f"{ADMIN}/users/{ada['id']}", json={"disabled": False}))
        ok(await by_key.get(PROBE))  # the key was suspended with the user, not revoked
    events = ok(await admin.get(f"{ADMIN}/audit", params={"action": "user.*"}))
    assert [e["action"] for e in events["events"]] == ["user.enable", "user.disable", "user.create"]
    for text in await all_audit_text(running):
        assert password not in text


async def test_service_accounts_authenticate_only_with_keys(running: RunningApp) -> None:
    admin = running.client
    bot = ok(await admin.post(f"{ADMIN}/service-accounts", json={"name": "ci", "role": "member"}), 201)
    assert bot["is_service"] and bot["email"].endswith("@service.local") and not bot["has_password"]
    error_of(await admin.post(f"{ADMIN}/service-accounts", json={"name": "root", "role": "owner"}), 422)
    listed = ok(await admin.get(f"{ADMIN}/service-accounts"))
    assert [b["id"] for b in listed["service_accounts"]] == [bot["id"]]
    assert bot["id"] not in str(ok(await admin.get(f"{ADMIN}/users")))
    key = await new_key(admin, service_account_id=bot["id"])
    assert key["user_id"] == bot["id"]
    async with as_caller(running, key["key"]) as bot_client:
        ok(await bot_client.get(PROBE))
    human = (ok(await admin.get(f"{ADMIN}/users")))["users"][0]
    error_of(await admin.post(f"{ADMIN}/keys", json={"name": "x", "service_account_id": human["id"]}), 404)


async def test_a_division_key_manages_only_its_division(running: RunningApp) -> None:
    admin = running.client
    north = ok(await admin.post(f"{ADMIN}/divisions", json={"name": "North"}), 201)
    south = ok(await admin.post(f"{ADMIN}/divisions", json={"name": "South"}), 201)
    error_of(await admin.post(f"{ADMIN}/divisions", json={"name": "North"}), 409)
    lead = await new_user(admin, "lead@example.org", "admin", division_id=north["id"])
    lead_key = await new_key(admin, user_id=lead["id"])
    assert lead_key["division_id"] == north["id"]  # the user's division
    south_key = await new_key(admin, role="member", division_id=south["id"])
    async with as_caller(running, lead_key["key"]) as lead_client:
        mine = await new_key(lead_client, role="member")
        assert mine["division_id"] == north["id"]
        keys = ok(await lead_client.get(f"{ADMIN}/keys"))
        assert {key["division_id"] for key in keys["keys"]} == {north["id"]}
        error_of(await lead_client.delete(f"{ADMIN}/keys/{south_key['id']}"), 404)
        error_of(await lead_client.post(f"{ADMIN}/keys", json={"name": "x", "division_id": south["id"]}), 403)
        error_of(await lead_client.post(f"{ADMIN}/divisions", json={"name": "West"}), 403)
        ok(await lead_client.delete(f"{ADMIN}/keys/{mine['id']}"), 204)
    error_of(await admin.delete(f"{ADMIN}/divisions/{north['id']}"), 409)  # a member and a live key are in it


async def test_bad_requests_get_typed_errors_without_echoing_secrets(running: RunningApp) -> None:
    admin = running.client
    secret = "short7!"
    for path, body in (
        ("/users", {"email": "a@example.org", "name": "A", "role": "member", "password": secret}),
        ("/users", {"email": "a@example.org", "name": "A", "role": "emperor"}),
        ("/users", {"email": "a@example.org", "name": "A" * 201, "role": "member"}),
        ("/users", {"email": "a@example.org", "name": "A", "role": "member", "is_admin": True}),
        ("/keys", {"name": "k", "expires_in_days": 3, "expires_at": "2030-01-01T00:00:00Z"}),
        ("/keys", {"name": "k", "requests_per_minute": 0}),
        ("/keys", {"name": "k", "user_id": "a", "service_account_id": "b"}),
        ("/keys", {"name": " "}),
        ("/divisions", {"name": ""}),
    ):
        error = error_of(await admin.post(ADMIN + path, json=body), 422)
        assert error["code"] == "invalid_request" and secret not in error["message"]
    error_of(await admin.post(f"{ADMIN}/keys", json={"name": "k", "expires_at": "2001-01-01T00:00:00Z"}), 422)
    error_of(await admin.post(f"{ADMIN}/users", json={"email": "nope", "name": "A", "role": "member"}), 422)
    error_of(await admin.get(f"{ADMIN}/audit", params={"action": "x'; drop"}), 422)
    error_of(await admin.get(f"{ADMIN}/users", params={"limit": 1000}), 422)
    error_of(await admin.get(f"{ADMIN}/users/{'x' * 65}"), 422)
    error_of(await admin.get(f"{ADMIN}/users/unknown"), 404)
    await new_user(admin, "a@example.org", "member")
    error_of(await admin.post(f"{ADMIN}/users", json={"email": "A@example.org", "name": "A", "role": "member"}), 409)
    async with as_caller(running, "atr_not_a_real_key_0123456789abcdefghij") as stranger:
        error_of(await stranger.get(f"{ADMIN}/org"), 401)


async def test_the_audit_trail_records_every_change_and_no_key(running: RunningApp) -> None:
    admin = running.client
    raws = [ADMIN_KEY]
    division = ok(await admin.post(f"{ADMIN}/divisions", json={"name": "Ops"}), 201)
    user = await new_user(admin, "ops@example.org", "member", division_id=division["id"])
    key = await new_key(admin, user_id=user["id"])
    raws.append(key["key"])
    rotated = ok(await admin.post(f"{ADMIN}/keys/{key['id']}/rotate"), 201)
    raws.append(rotated["key"])
    ok(await admin.delete(f"{ADMIN}/keys/{rotated['id']}"), 204)
    ok(await admin.patch(f"{ADMIN}/users/{user['id']}", json={"role": "viewer", "division_id": None}))
    ok(await admin.post(f"{ADMIN}/service-accounts", json={"name": "bot"}), 201)
    acme = ok(await admin.post(f"{ADMIN}/orgs", json={"name": "Acme", "owner_key": True}), 201)
    raws.append(acme["owner_key"]["key"])
    ok(await admin.delete(f"{ADMIN}/users/{user['id']}"), 204)
    ok(await admin.delete(f"{ADMIN}/divisions/{division['id']}"), 204)

    first = ok(await admin.get(f"{ADMIN}/audit", params={"limit": 4}))
    rest = ok(await admin.get(f"{ADMIN}/audit", params={"cursor": first["next_cursor"], "limit": 100}))
    actions = [e["action"] for e in first["events"] + rest["events"]]
    assert actions == ["division.delete", "user.delete", "org.create", "service_account.create", "user.update",
                       "role.change", "key.revoke", "key.rotate", "key.create", "user.create", "division.create"]
    change = next(e for e in first["events"] + rest["events"] if e["action"] == "role.change")
    assert (change["details"]["old_role"], change["details"]["new_role"]) == ("member", "viewer")
    revoke = next(e for e in rest["events"] if e["action"] == "key.revoke")
    assert revoke["target_id"] == rotated["id"] and revoke["details"]["prefix"] == rotated["prefix"][4:]
    assert revoke["actor_key_id"] is not None and revoke["request_id"] and revoke["details"]["via"] == "api_key"
    only_keys = ok(await admin.get(f"{ADMIN}/audit", params={"action": "key.*"}))
    assert [e["action"] for e in only_keys["events"]] == ["key.revoke", "key.rotate", "key.create"]
    texts = await all_audit_text(running)
    assert len(texts) == len(actions) + 2  # and Acme's: membership.add, key.create
    for text in texts:
        for raw in raws:
            assert raw not in text and hash_key(raw) not in text


@pytest.mark.integration
async def test_accounts_across_tenants_on_postgres_under_rls(tmp_path: Path, postgres: PostgresServer,
                                                             blockbuster: BlockBuster) -> None:
    urls = await database_with_app_role(postgres)
    settings = await anyio.to_thread.run_sync(lambda: make_settings(
        tmp_path / "data", database_url=urls.app_url, migration_database_url=urls.owner_url))
    # Start-up and shutdown run Alembic, whose asyncpg connect (in its own thread's loop) stats the socket
    # file: the guard watches the requests only.
    blockbuster.deactivate()
    async with run_app(settings) as app:
        blockbuster.activate()
        try:
            await _cross_tenant_flow(app)
        finally:
            blockbuster.deactivate()


async def _cross_tenant_flow(app: RunningApp) -> None:
    """Memberships across tenants, 404 for the other tenant's key, revocation at once."""
    admin = app.client
    ada = await new_user(admin, "ada@example.org", "member")
    home_key = await new_key(admin, user_id=ada["id"])
    acme = ok(await admin.post(f"{ADMIN}/orgs", json={"name": "Acme", "owner_key": True}), 201)
    async with as_caller(app, acme["owner_key"]["key"]) as acme_client:
        invited = ok(await acme_client.post(f"{ADMIN}/memberships",
                                                  json={"email": "ada@example.org", "role": "member"}), 202)
        listed = ok(await acme_client.get(f"{ADMIN}/invitations"))
        assert [i["id"] for i in listed["invitations"]] == [invited["id"]]
        await accept(app, home_key["key"], invited["id"])
        listed = ok(await acme_client.get(f"{ADMIN}/users"))
        assert {u["email"] for u in listed["users"]} == {"admin@localhost", "ada@example.org"}
        error_of(await acme_client.delete(f"{ADMIN}/keys/{home_key['id']}"), 404)
        acme_key = await new_key(acme_client, user_id=ada["id"])
        async with as_caller(app, acme_key["key"]) as ada_at_acme:
            ok(await ada_at_acme.get(PROBE))
            ok(await acme_client.delete(f"{ADMIN}/keys/{acme_key['id']}"), 204)
            error_of(await ada_at_acme.get(PROBE), 401)
    audit = ok(await admin.get(f"{ADMIN}/audit"))
    assert [e["action"] for e in audit["events"]][:3] == ["org.create", "key.create", "user.create"]


async def login_token(app: RunningApp, email: str, password: str, **extra: Any) -> str:
    return str(ok(await app.client.post("/api/v1/auth/token", json={"email": email, "password": password,
                                                                     **extra}))["access_token"])


async def test_a_demoted_admin_loses_admin_powers_with_the_same_token(running: RunningApp) -> None:
    """Issue 11 item 2: role changes take effect on the next request, whatever the access token says."""
    admin = running.client
    password = "a correct horse battery"
    ada = await new_user(admin, "ada@example.org", "admin", password=password)
    token = await login_token(running, "ada@example.org", password)
    async with as_caller(running, token) as ada_client:
        await new_user(ada_client, "first@example.org", "admin")  # 201 while she is an admin
        ok(await admin.patch(f"{ADMIN}/users/{ada['id']}", json={"role": "member"}))
        refused = error_of(await ada_client.post(f"{ADMIN}/users", json={
            "email": "second@example.org", "name": "second", "role": "admin"}), 403)
        assert refused["code"] == "forbidden"
        ok(await ada_client.get(PROBE))  # still a member
        ok(await admin.patch(f"{ADMIN}/users/{ada['id']}", json={"role": "admin"}))
        assert ok(await ada_client.get(f"{ADMIN}/org"))["role"] == "admin"  # a promotion too
    listed = ok(await admin.get(f"{ADMIN}/users"))
    assert "second@example.org" not in str(listed)


async def test_a_division_change_a_removal_and_a_disable_take_effect_at_once(running: RunningApp) -> None:
    admin = running.client
    password = "a correct horse battery"
    north = ok(await admin.post(f"{ADMIN}/divisions", json={"name": "North"}), 201)
    south = ok(await admin.post(f"{ADMIN}/divisions", json={"name": "South"}), 201)
    ada = await new_user(admin, "ada@example.org", "admin", password=password, division_id=north["id"])
    key = await new_key(admin, user_id=ada["id"])
    token = await login_token(running, "ada@example.org", password)
    async with as_caller(running, token) as by_token, as_caller(running, key["key"]) as by_key:
        for client in (by_token, by_key):
            assert ok(await client.get(f"{ADMIN}/org"))["division_id"] == north["id"]
        ok(await admin.patch(f"{ADMIN}/users/{ada['id']}", json={"division_id": south["id"]}))
        for client in (by_token, by_key):
            assert ok(await client.get(f"{ADMIN}/org"))["division_id"] == south["id"]
        listed = ok(await admin.get(f"{ADMIN}/keys"))
        assert {k["id"]: k["division_id"] for k in listed["keys"]}[key["id"]] == south["id"]  # the key moved too
        ok(await admin.patch(f"{ADMIN}/users/{ada['id']}", json={"division_id": None}))
        assert ok(await by_token.get(f"{ADMIN}/org"))["division_id"] is None
        ok(await admin.patch(f"{ADMIN}/users/{ada['id']}", json={"disabled": True}))
        for client in (by_token, by_key):
            error_of(await client.get(PROBE), 401)
        ok(await admin.patch(f"{ADMIN}/users/{ada['id']}", json={"disabled": False}))
        for client in (by_token, by_key):  # and enabling again works at once too
            ok(await client.get(PROBE))


async def test_removal_from_an_organisation_ends_the_token_for_it(running: RunningApp) -> None:
    admin = running.client
    password = "a correct horse battery"
    ada = await new_user(admin, "ada@example.org", "member", password=password)
    home_key = await new_key(admin, user_id=ada["id"])
    acme = ok(await admin.post(f"{ADMIN}/orgs", json={"name": "Acme", "owner_key": True}), 201)
    async with as_caller(running, acme["owner_key"]["key"]) as acme_client:
        invited = ok(await acme_client.post(f"{ADMIN}/invitations",
                                                  json={"email": "ada@example.org", "role": "admin"}), 202)
        await accept(running, home_key["key"], invited["id"])
        token = await login_token(running, "ada@example.org", password, org_id=acme["id"])
        async with as_caller(running, token) as ada_at_acme:
            assert ok(await ada_at_acme.get(f"{ADMIN}/org"))["role"] == "admin"
            ok(await acme_client.delete(f"{ADMIN}/memberships/{ada['id']}"), 204)
            error_of(await ada_at_acme.get(PROBE), 401)


async def test_the_audit_cursor_is_bounded(running: RunningApp) -> None:
    """Issue 11 item 6: a cursor past a 64-bit integer answered 500."""
    admin = running.client
    ok(await admin.post(f"{ADMIN}/divisions", json={"name": "Audited"}), 201)
    for cursor in ("9223372036854775808", str(10**30), "0", "-1"):
        error = error_of(await admin.get(f"{ADMIN}/audit", params={"cursor": cursor}), 422)
        assert error["code"] == "invalid_request"
    assert ok(await admin.get(f"{ADMIN}/audit", params={"cursor": "9223372036854775807"}))["events"]


async def test_creating_an_account_tells_a_taken_email_and_points_to_invitations(running: RunningApp) -> None:
    admin = running.client
    await new_user(admin, "ada@example.org", "member")
    error = error_of(await new_user_raw(admin, "ADA@example.org", "member"), 409)
    assert error["code"] == "conflict" and "/api/v1/admin/invitations" in error["message"]
