"""The authentication flows on PostgreSQL as the application's normal role (under Row-Level Security): login
in a chosen organisation, access tokens, refresh rotation and reuse detection, logout, revoke-all, external
tokens with auto-provisioning, audit rows."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import jwt
import pytest
from sqlalchemy import select

from atrium.store.models import AuditEvent, Membership, User
from tests.api.auth_helpers import add_org, add_user, admin_org, anonymous, bearer, login, settings_of
from tests.api.test_edge import assert_typed_error
from tests.conftest import RunningApp, run_app
from tests.postgres_fixtures import PostgresServer
from tests.tenancy_helpers import database_with_app_role

pytestmark = pytest.mark.integration

PASSWORD = "a long enough password"
SECRET = "supabase-like-shared-secret-of-40-chars!"


@pytest.fixture
async def pg_app(tmp_path: Path, postgres: PostgresServer) -> AsyncIterator[RunningApp]:
    urls = await database_with_app_role(postgres)
    external = {"algorithms": ["HS256"], "secret": SECRET, "issuer": "https://idp.example", "audience": "api",
                "claims": {"org": "app_metadata.org_id", "email_verified": None}, "auto_provision": True}
    settings = await settings_of(tmp_path / "data", database_url=urls.app_url,
                                 migration_database_url=urls.owner_url, auth={"external": external})
    async with run_app(settings) as app:
        yield app


async def test_password_sessions_under_rls(pg_app: RunningApp) -> None:
    user_id = await add_user(pg_app, "ada@example.com", PASSWORD)
    other = await add_org(pg_app, "Other")
    async with pg_app.services.db.system_session() as session:
        session.add(Membership(org_id=other, user_id=user_id, role="admin"))
    client = anonymous(pg_app)
    assert_typed_error(await login(client, "ada@example.com", "wrong"), 401, "unauthorized")
    pair = (await login(client, "ada@example.com", PASSWORD, org_id=other)).json()
    assert (pair["org_id"], pair["role"]) == (other, "admin")
    assert (await client.get("/api/v1/conversations", headers=bearer(pair["access_token"]))).status_code == 200
    renewed = await client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert renewed.status_code == 200, renewed.text
    replay = await client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert_typed_error(replay, 401, "refresh_token_reused")
    newer = await client.post("/api/v1/auth/refresh", json={"refresh_token": renewed.json()["refresh_token"]})
    assert_typed_error(newer, 401, "unauthorized")
    second = (await login(client, "ada@example.com", PASSWORD)).json()
    revoked = await client.post("/api/v1/auth/revoke", headers=bearer(second["access_token"]))
    assert revoked.json() == {"revoked_sessions": 1}
    logout = await client.post("/api/v1/auth/logout", json={"refresh_token": second["refresh_token"]})
    assert logout.status_code == 204
    async with pg_app.services.db.system_session() as session:
        actions = (await session.scalars(select(AuditEvent.action + ":" + AuditEvent.outcome)
                                         .where(AuditEvent.action.like("auth.%")).order_by(AuditEvent.id))).all()
    assert actions == ["auth.login:failure", "auth.login:success", "auth.refresh:success",
                       "auth.refresh_reuse:failure", "auth.login:success", "auth.revoke:success",
                       "auth.logout:success"]


async def test_external_tokens_provision_users_under_rls(pg_app: RunningApp) -> None:
    org_id = await admin_org(pg_app)
    now = int(time.time())
    token = jwt.encode({"sub": "ext-1", "iss": "https://idp.example", "aud": "api", "iat": now, "exp": now + 60,
                        "email": "ext@example.com", "app_metadata": {"org_id": org_id}}, SECRET, algorithm="HS256")
    response = await anonymous(pg_app).get("/api/v1/conversations", headers=bearer(token))
    assert response.status_code == 200, response.text
    async with pg_app.services.db.system_session() as session:
        user = await session.scalar(select(User).where(User.email == "ext@example.com"))
    assert user is not None and user.org_id == org_id
    assert (await pg_app.services.authenticator.authenticate(token)).user_id == user.id
