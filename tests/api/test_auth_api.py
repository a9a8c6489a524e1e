"""Password login, access tokens, rotating refresh tokens, logout and revoke-all, over real HTTP (ASGI) and a
real SQLite database; the audit trail and the logs never hold a password or a token."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import jwt
import pytest

from atrium.settings import Settings
from atrium.store.models import Division, Membership, User
from tests.api.auth_helpers import add_org, add_user, admin_org, anonymous, audit_rows, bearer, login, settings_of
from tests.api.test_edge import assert_typed_error
from tests.conftest import RunningApp, run_app

PASSWORD = "correct horse battery staple"


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[RunningApp]:
    async with run_app(settings) as running:
        yield running


async def test_login_answers_a_working_token_pair(app: RunningApp) -> None:
    user_id = await add_user(app, "ada@example.com", PASSWORD, role="admin")
    client = anonymous(app)
    response = await login(client, "Ada@Example.com ", PASSWORD)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 900 and body["refresh_expires_in"] == 30 * 86_400
    assert body["org_id"] == await admin_org(app) and body["role"] == "admin"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert claims["sub"] == user_id and claims["org"] == body["org_id"] and claims["typ"] == "access"
    assert {"iat", "exp", "jti", "iss", "aud", "div"} <= set(claims)
    listed = await client.get("/api/v1/conversations", headers=bearer(body["access_token"]))
    assert listed.status_code == 200, listed.text
    assert "conversations" in listed.json()


@pytest.mark.parametrize("case", ["wrong_password", "unknown_email", "disabled", "service_account", "no_password"])
async def test_failed_logins_look_alike(app: RunningApp, case: str) -> None:
    await add_user(app, "ok@example.com", PASSWORD)
    await add_user(app, "off@example.com", PASSWORD, disabled=True)
    await add_user(app, "robot@example.com", PASSWORD, is_service=True)
    await add_user(app, "nopass@example.com", None)
    email, password = {"wrong_password": ("ok@example.com", "nope"), "unknown_email": ("who@example.com", PASSWORD),
                       "disabled": ("off@example.com", PASSWORD), "service_account": ("robot@example.com", PASSWORD),
                       "no_password": ("nopass@example.com", "")}[case]
    response = await login(anonymous(app), email, password or "x")
    error = assert_typed_error(response, 401, "unauthorized")
    assert error["message"] == "Invalid email or password."
    [row] = await audit_rows(app, "auth.login")
    assert row.outcome == "failure" and row.details is not None and row.details["reason"] == case
    assert PASSWORD not in json.dumps(row.details)


async def test_unknown_email_costs_a_password_check_too(app: RunningApp) -> None:
    await add_user(app, "ok@example.com", PASSWORD)
    client = anonymous(app)

    async def timed(email: str) -> float:
        started = time.perf_counter()
        assert (await login(client, email, "wrong password")).status_code == 401
        return time.perf_counter() - started

    await timed("warm@example.com")  # the dummy hash is made on first use
    wrong = sorted([await timed("ok@example.com") for _ in range(3)])[1]
    unknown = sorted([await timed("nobody@example.com") for _ in range(3)])[1]
    assert unknown > 0.4 * wrong and wrong > 0.4 * unknown, (unknown, wrong)


async def test_login_picks_a_membership_by_org_id(app: RunningApp) -> None:
    user_id = await add_user(app, "multi@example.com", PASSWORD, role="viewer")
    other = await add_org(app, "Other")
    stranger = await add_org(app, "Stranger")
    async with app.services.db.system_session() as session:
        division = Division(org_id=other, name="Research")
        session.add(division)
        await session.flush()
        session.add(Membership(org_id=other, user_id=user_id, role="admin", division_id=division.id))
        division_id = division.id
    client = anonymous(app)
    home = (await login(client, "multi@example.com", PASSWORD)).json()
    assert home["org_id"] == await admin_org(app) and home["role"] == "viewer"
    chosen = (await login(client, "multi@example.com", PASSWORD, org_id=other)).json()
    assert chosen["org_id"] == other and chosen["role"] == "admin"
    claims = jwt.decode(chosen["access_token"], options={"verify_signature": False})
    assert claims["org"] == other and claims["div"] == division_id and claims["role"] == "admin"
    refused = await login(client, "multi@example.com", PASSWORD, org_id=stranger)
    assert_typed_error(refused, 403, "forbidden")
    # the refresh keeps the chosen organisation
    renewed = (await client.post("/api/v1/auth/refresh", json={"refresh_token": chosen["refresh_token"]})).json()
    assert renewed["org_id"] == other and renewed["role"] == "admin"


async def test_sizes_and_shapes_are_validated_without_echoing_the_password(app: RunningApp) -> None:
    client = anonymous(app)
    long_password = "p" * 1025
    response = await login(client, "ada@example.com", long_password)
    assert_typed_error(response, 422, "invalid_request")
    assert long_password not in response.text
    assert_typed_error(await login(client, "a" * 321 + "@x.io", PASSWORD), 422, "invalid_request")
    assert_typed_error(await client.post("/api/v1/auth/token", json={"email": "a@b.c"}), 422, "invalid_request")
    assert_typed_error(await client.post("/api/v1/auth/refresh", json={"refresh_token": "r" * 201}), 422,
                       "invalid_request")


async def test_access_tokens_expire(tmp_path: Path) -> None:
    async with run_app(await settings_of(tmp_path / "data", auth={"access_token_ttl_s": 2})) as app:
        await add_user(app, "ada@example.com", PASSWORD)
        client = anonymous(app)
        token = (await login(client, "ada@example.com", PASSWORD)).json()["access_token"]
        assert (await client.get("/api/v1/conversations", headers=bearer(token))).status_code == 200
        await asyncio.sleep(3.1)
        expired = await client.get("/api/v1/conversations", headers=bearer(token))
        assert_typed_error(expired, 401, "token_expired")


def _forge(claims: dict[str, object], header: dict[str, object]) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part(header)}.{part(claims)}."


async def test_forged_tampered_and_unsigned_tokens_are_refused(app: RunningApp) -> None:
    await add_user(app, "ada@example.com", PASSWORD, role="viewer")
    client = anonymous(app)
    token = (await login(client, "ada@example.com", PASSWORD)).json()["access_token"]
    claims = jwt.decode(token, options={"verify_signature": False})
    other_secret = jwt.encode({**claims, "role": "owner"}, "another-secret-that-is-long-enough-000000",
                              algorithm="HS256")
    header, _payload, signature = token.split(".")
    raised = base64.urlsafe_b64encode(json.dumps({**claims, "role": "owner"}).encode()).rstrip(b"=").decode()
    tampered = f"{header}.{raised}.{signature}"
    unsigned = _forge({**claims, "role": "owner"}, {"alg": "none", "typ": "JWT"})
    for bad in (other_secret, tampered, unsigned, token[:-4] + "AAAA"):
        response = await client.get("/api/v1/conversations", headers=bearer(bad))
        assert_typed_error(response, 401, "unauthorized")
    assert (await client.get("/api/v1/conversations", headers=bearer(token))).status_code == 200


async def test_refresh_rotates_and_reuse_revokes_the_family(app: RunningApp) -> None:
    await add_user(app, "ada@example.com", PASSWORD)
    client = anonymous(app)
    first = (await login(client, "ada@example.com", PASSWORD)).json()
    second = await client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200, second.text
    pair = second.json()
    assert pair["refresh_token"] != first["refresh_token"] and pair["access_token"] != first["access_token"]
    assert (await client.get("/api/v1/conversations", headers=bearer(pair["access_token"]))).status_code == 200
    # the first refresh token is used up: presenting it again means it was stolen
    replay = await client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert_typed_error(replay, 401, "refresh_token_reused")
    # ...so the whole family is gone, the newer token included
    newer = await client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert_typed_error(newer, 401, "unauthorized")
    [reuse] = await audit_rows(app, "auth.refresh_reuse")
    assert reuse.outcome == "failure" and reuse.target_type == "refresh_family"
    assert first["refresh_token"] not in json.dumps(reuse.details)


async def test_concurrent_refreshes_of_one_token_let_one_win(app: RunningApp) -> None:
    await add_user(app, "ada@example.com", PASSWORD)
    client = anonymous(app)
    token = (await login(client, "ada@example.com", PASSWORD)).json()["refresh_token"]
    answers = await asyncio.gather(*(client.post("/api/v1/auth/refresh", json={"refresh_token": token})
                                     for _ in range(4)))
    assert sorted(answer.status_code for answer in answers).count(200) <= 1
    assert any(answer.status_code == 401 for answer in answers)


async def test_unknown_refresh_token_is_refused(app: RunningApp) -> None:
    response = await anonymous(app).post("/api/v1/auth/refresh", json={"refresh_token": "atrr_made_up"})
    assert_typed_error(response, 401, "unauthorized")


async def test_logout_ends_the_session(app: RunningApp) -> None:
    await add_user(app, "ada@example.com", PASSWORD)
    client = anonymous(app)
    pair = (await login(client, "ada@example.com", PASSWORD)).json()
    out = await client.post("/api/v1/auth/logout", json={"refresh_token": pair["refresh_token"]})
    assert out.status_code == 204 and out.content == b""
    after = await client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert_typed_error(after, 401, "unauthorized")
    assert (await client.post("/api/v1/auth/logout", json={"refresh_token": "atrr_nothing"})).status_code == 204
    [row] = await audit_rows(app, "auth.logout")
    assert row.outcome == "success"


async def test_revoke_logs_out_everywhere(app: RunningApp) -> None:
    user_id = await add_user(app, "ada@example.com", PASSWORD)
    await add_user(app, "bob@example.com", PASSWORD)
    client = anonymous(app)
    phone = (await login(client, "ada@example.com", PASSWORD)).json()
    laptop = (await login(client, "ada@example.com", PASSWORD)).json()
    bob = (await login(client, "bob@example.com", PASSWORD)).json()
    assert_typed_error(await client.post("/api/v1/auth/revoke"), 401, "unauthorized")
    revoked = await client.post("/api/v1/auth/revoke", headers=bearer(laptop["access_token"]))
    assert revoked.status_code == 200, revoked.text
    assert revoked.json() == {"revoked_sessions": 2}
    for pair in (phone, laptop):
        refused = await client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
        assert_typed_error(refused, 401, "unauthorized")
    # another user's session is untouched
    assert (await client.post("/api/v1/auth/refresh", json={"refresh_token": bob["refresh_token"]})).status_code == 200
    [row] = await audit_rows(app, "auth.revoke")
    assert row.actor_user_id == user_id and row.details == {"families": 2}


async def test_disabling_a_user_ends_their_access_tokens_and_refresh(app: RunningApp) -> None:
    user_id = await add_user(app, "ada@example.com", PASSWORD)
    client = anonymous(app)
    pair = (await login(client, "ada@example.com", PASSWORD)).json()
    assert (await client.get("/api/v1/conversations", headers=bearer(pair["access_token"]))).status_code == 200
    async with app.services.db.system_session() as session:
        user = await session.get(User, user_id)
        assert user is not None
        user.disabled_at = user.created_at
    await app.services.authenticator.announce_user_disabled(user_id)
    assert_typed_error(await client.get("/api/v1/conversations", headers=bearer(pair["access_token"])), 401,
                       "unauthorized")
    assert_typed_error(await client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}),
                       401, "unauthorized")


async def test_login_attempts_are_rate_limited(tmp_path: Path) -> None:
    settings = await settings_of(tmp_path / "data", auth={"login_failures_per_minute_per_email": 3,
                                                      "login_attempts_per_minute_per_ip": 8})
    async with run_app(settings) as app:
        await add_user(app, "ada@example.com", PASSWORD)
        await add_user(app, "bob@example.com", PASSWORD)
        client = anonymous(app)
        for _ in range(3):
            assert (await login(client, "ada@example.com", "guess")).status_code == 401
        limited = await login(client, "ada@example.com", PASSWORD)  # even the right password, for now
        assert_typed_error(limited, 429, "rate_limited")
        assert int(limited.headers["retry-after"]) >= 1
        # another email from the same client still works until the per-IP limit
        assert (await login(client, "bob@example.com", PASSWORD)).status_code == 200
        # 8 attempts per minute from one IP: ada's 4 and bob's first 4 pass, the 9th is refused. The sliding
        # window's count is an estimate: when the minute turns during the test it may let one more through.
        statuses = [(await login(client, "bob@example.com", PASSWORD)).status_code for _ in range(5)]
        assert statuses in ([200, 200, 200, 429, 429], [200, 200, 200, 200, 429]), statuses


async def test_logins_are_audited_without_secrets_and_logs_stay_clean(app: RunningApp,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    user_id = await add_user(app, "ada@example.com", PASSWORD)
    client = anonymous(app)
    pair = (await login(client, "ada@example.com", PASSWORD)).json()
    await login(client, "ada@example.com", PASSWORD + "!")
    renewed = (await client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})).json()
    await client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})  # reuse
    await client.post("/api/v1/auth/logout", json={"refresh_token": renewed["refresh_token"]})
    rows = await audit_rows(app, "auth.login")
    assert [(row.outcome, row.actor_user_id if row.outcome == "success" else row.target_id) for row in rows] == [
        ("success", user_id), ("failure", user_id)]
    assert rows[0].ip == "127.0.0.1"
    secrets = [PASSWORD, pair["access_token"], pair["refresh_token"], renewed["access_token"],
               renewed["refresh_token"]]
    everything = json.dumps([row.details for row in await audit_rows(app, "auth.login")]
                            + [row.details for row in await audit_rows(app, "auth.refresh_reuse")])
    jwt_secret = await anyio.Path(app.services.settings.data_dir / "jwt_secret").read_text()
    for secret in [*secrets, jwt_secret]:
        assert secret not in everything
        assert secret not in caplog.text


async def test_the_signing_secret_is_kept_private_and_survives_restarts(tmp_path: Path) -> None:
    settings = await settings_of(tmp_path / "data")
    async with run_app(settings) as app:
        await add_user(app, "ada@example.com", PASSWORD)
        token = (await login(anonymous(app), "ada@example.com", PASSWORD)).json()["access_token"]
    secret_file = settings.data_dir / "jwt_secret"
    assert (await anyio.Path(secret_file).stat()).st_mode & 0o777 == 0o600
    async with run_app(settings) as app:
        assert (await anonymous(app).get("/api/v1/conversations", headers=bearer(token))).status_code == 200


async def test_a_configured_secret_wins_and_other_secrets_fail(tmp_path: Path) -> None:
    secret = "s" * 40
    async with run_app(await settings_of(tmp_path / "a", auth={"jwt_secret": secret})) as app:
        await add_user(app, "ada@example.com", PASSWORD)
        token = (await login(anonymous(app), "ada@example.com", PASSWORD)).json()["access_token"]
        jwt.decode(token, secret, algorithms=["HS256"], audience="atrium")  # signed with the configured one
        assert not await anyio.Path(tmp_path / "a" / "jwt_secret").exists()


async def test_api_keys_still_work_and_carry_their_limits(app: RunningApp) -> None:
    from atrium.accounts.api_keys import create_key

    org_id = await admin_org(app)
    async with app.services.db.system_session() as session:
        division = Division(org_id=org_id, name="Ops")
        session.add(division)
        await session.flush()
        row, raw = await create_key(session, org_id=org_id, user_id=None, role="member", name="limited",
                                    division_id=division.id, requests_per_minute=7, tokens_per_minute=900)
    principal = await app.services.authenticator.authenticate(raw)
    assert (principal.division_id, principal.via, principal.api_key_id) == (division.id, "api_key", row.id)
    assert (principal.key_requests_per_minute, principal.key_tokens_per_minute) == (7, 900)
    assert (await anonymous(app).get("/api/v1/conversations", headers=bearer(raw))).status_code == 200
