"""External identity providers: HS256 with a shared secret (like Supabase), RS256 through a JWKS file and a
JWKS URL served by a local HTTP server (like Auth0)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import select, update

from atrium.store.models import AuditEvent, Membership, User
from tests.api.auth_helpers import add_user, admin_org, anonymous, bearer, settings_of
from tests.api.test_edge import assert_typed_error
from tests.conftest import RunningApp, free_port, run_app

SUPABASE_ISSUER = "https://project.supabase.co/auth/v1"
SUPABASE_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"
AUTH0_ISSUER = "https://tenant.eu.auth0.com/"
AUTH0_AUDIENCE = "https://api.atrium.example"
ROLES_CLAIM = "https://atrium.example/roles"


def supabase_token(org_id: str, *, secret: str = SUPABASE_SECRET, **overrides: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": "2f1c0e7a-user", "aud": "authenticated", "iss": SUPABASE_ISSUER,
                              "iat": now, "exp": now + 600, "email": "sam@example.com", "role": "authenticated",
                              "app_metadata": {"org_id": org_id, "role": "editor"}, **overrides}
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, secret, algorithm="HS256")


def supabase_config(**extra: Any) -> dict[str, Any]:
    return {"external": {"algorithms": ["HS256"], "secret": SUPABASE_SECRET, "issuer": SUPABASE_ISSUER,
                         "audience": "authenticated",
                         "claims": {"org": "app_metadata.org_id", "role": "app_metadata.role",
                                    "email_verified": None},
                         "role_map": {"editor": "admin", "reader": "viewer"}, **extra}}


@pytest.fixture
async def supabase(tmp_path: Path) -> AsyncIterator[RunningApp]:
    async with run_app(await settings_of(tmp_path / "data", auth=supabase_config())) as app:
        yield app


async def test_supabase_tokens_map_claims_to_org_and_role(supabase: RunningApp) -> None:
    org_id = await admin_org(supabase)
    client = anonymous(supabase)
    token = supabase_token(org_id)
    assert (await client.get("/api/v1/conversations", headers=bearer(token))).status_code == 200
    principal = await supabase.services.authenticator.authenticate(token)
    assert (principal.org_id, principal.role, principal.via, principal.user_id) == (org_id, "admin", "external", None)
    reader = await supabase.services.authenticator.authenticate(
        supabase_token(org_id, app_metadata={"org_id": org_id, "role": "reader"}))
    assert reader.role == "viewer"
    unmapped = await supabase.services.authenticator.authenticate(
        supabase_token(org_id, app_metadata={"org_id": org_id, "role": "superuser"}))
    assert unmapped.role == "member"  # the default role


async def test_supabase_tokens_that_must_fail(supabase: RunningApp, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    org_id = await admin_org(supabase)
    client = anonymous(supabase)
    now = int(time.time())
    bad = {
        "wrong audience": supabase_token(org_id, aud="someone-else"),
        "wrong issuer": supabase_token(org_id, iss="https://evil.example/auth/v1"),
        "expired": supabase_token(org_id, iat=now - 7200, exp=now - 3600),
        "other secret": supabase_token(org_id, secret="x" * 48),
        "unknown org": supabase_token("0" * 32),
        "no org": supabase_token(org_id, app_metadata={"role": "editor"}),
        "alg none": jwt.encode({"sub": "x", "iss": SUPABASE_ISSUER, "aud": "authenticated", "exp": now + 60,
                                "iat": now, "app_metadata": {"org_id": org_id}}, "", algorithm="none"),
    }
    for name, token in bad.items():
        response = await client.get("/api/v1/conversations", headers=bearer(token))
        assert response.status_code == 401, name
        expected = "token_expired" if name == "expired" else "unauthorized"
        assert_typed_error(response, 401, expected)
        assert token not in caplog.text and token not in response.text
    assert SUPABASE_SECRET not in caplog.text


async def test_a_verified_email_links_the_local_user_and_disabled_users_are_refused(supabase: RunningApp) -> None:
    org_id = await admin_org(supabase)
    user_id = await add_user(supabase, "sam@example.com", None)
    principal = await supabase.services.authenticator.authenticate(supabase_token(org_id))
    assert principal.user_id == user_id
    async with supabase.services.db.system_session() as session:
        await session.execute(update(User).where(User.id == user_id).values(disabled_at=User.created_at))
    await supabase.services.authenticator.announce_user_disabled(user_id)
    response = await anonymous(supabase).get("/api/v1/conversations", headers=bearer(supabase_token(org_id)))
    assert_typed_error(response, 401, "unauthorized")


async def test_auto_provisioning_creates_the_user_once(tmp_path: Path) -> None:
    settings = await settings_of(tmp_path / "data", auth=supabase_config(auto_provision=True))
    async with run_app(settings) as app:
        org_id = await admin_org(app)
        client = anonymous(app)
        for i in range(2):
            token = supabase_token(org_id, email="New.Person@example.com", iat=int(time.time()) - i)
            assert (await client.get("/api/v1/conversations", headers=bearer(token))).status_code == 200
        async with app.services.db.system_session() as session:
            users = (await session.scalars(select(User).where(User.email == "new.person@example.com"))).all()
            assert len(users) == 1 and users[0].org_id == org_id and users[0].password_hash is None
            membership = await session.scalar(select(Membership).where(Membership.user_id == users[0].id))
            assert membership is not None and membership.role == "admin"
            provisioned = (await session.scalars(
                select(AuditEvent).where(AuditEvent.action == "auth.external_provision"))).all()
            assert [row.target_id for row in provisioned] == [users[0].id]
        again = supabase_token(org_id, email="new.person@example.com")
        principal = await app.services.authenticator.authenticate(again)
        assert principal.user_id == users[0].id


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk_of(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    public: dict[str, Any] = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    return {**public, "kid": kid, "use": "sig", "alg": "RS256"}


def auth0_token(key: rsa.RSAPrivateKey, kid: str, org_id: str, **overrides: Any) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {"sub": "auth0|abc", "iss": AUTH0_ISSUER, "aud": [AUTH0_AUDIENCE, "userinfo"],
                              "iat": now, "exp": now + 600, "org_id": org_id, ROLES_CLAIM: ["reader", "boss"],
                              **overrides}
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})


def hmac_token(claims: dict[str, Any], secret: bytes, *, kid: str) -> str:
    """An HS256 token made by hand (pyjwt refuses to use a public key as an HMAC secret, as an attacker would)."""
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    signing_input = f"{part({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{part(claims)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def auth0_config(**source: Any) -> dict[str, Any]:
    return {"external": {"algorithms": ["RS256"], "issuer": AUTH0_ISSUER, "audience": AUTH0_AUDIENCE,
                         "claims": {"org": "org_id", "role": ROLES_CLAIM},
                         "role_map": {"reader": "viewer", "boss": "admin"}, **source}}


async def test_rs256_through_a_jwks_file(tmp_path: Path) -> None:
    key, stranger = rsa_key(), rsa_key()
    jwks_file = tmp_path / "jwks.json"
    await anyio.Path(jwks_file).write_text(json.dumps({"keys": [jwk_of(key, "k1")]}))
    async with run_app(await settings_of(tmp_path / "data", auth=auth0_config(jwks_file=str(jwks_file)))) as app:
        org_id = await admin_org(app)
        client = anonymous(app)
        good = auth0_token(key, "k1", org_id)
        assert (await client.get("/api/v1/conversations", headers=bearer(good))).status_code == 200
        principal = await app.services.authenticator.authenticate(good)
        assert (principal.org_id, principal.role, principal.via) == (org_id, "admin", "external")  # highest role
        public_pem = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
        now = int(time.time())
        for bad in (auth0_token(stranger, "k1", org_id),  # right kid, wrong key
                    auth0_token(key, "k9", org_id),  # unknown kid
                    auth0_token(key, "k1", org_id, aud="https://other.api"),
                    auth0_token(key, "k1", org_id, iss="https://evil.auth0.com/"),
                    auth0_token(key, "k1", org_id, iat=now - 7200, exp=now - 3600),
                    # algorithm confusion: HS256 "signed" with the public key
                    hmac_token({"sub": "x", "iss": AUTH0_ISSUER, "aud": AUTH0_AUDIENCE, "iat": now, "exp": now + 60,
                                "org_id": org_id}, public_pem.encode(), kid="k1")):
            assert (await client.get("/api/v1/conversations", headers=bearer(bad))).status_code == 401


class JwksServer:
    """A local HTTP server serving a JWKS, counting its fetches."""

    def __init__(self, keys: list[dict[str, Any]]) -> None:
        self.keys = keys
        self.fetches = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/.well-known/jwks.json"
        self._runner: web.AppRunner | None = None

    async def _serve(self, _request: web.Request) -> web.Response:
        self.fetches += 1
        return web.json_response({"keys": self.keys})

    async def __aenter__(self) -> JwksServer:
        app = web.Application()
        app.router.add_get("/.well-known/jwks.json", self._serve)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


async def test_rs256_through_a_jwks_url_is_cached_and_follows_key_rotation(tmp_path: Path) -> None:
    old, new = rsa_key(), rsa_key()
    async with JwksServer([jwk_of(old, "old")]) as jwks:
        config = auth0_config(jwks_url=jwks.url, jwks_min_refresh_s=0)
        async with run_app(await settings_of(tmp_path / "data", auth=config)) as app:
            org_id = await admin_org(app)
            client = anonymous(app)
            for i in range(3):
                token = auth0_token(old, "old", org_id, sub=f"auth0|{i}")
                assert (await client.get("/api/v1/conversations", headers=bearer(token))).status_code == 200
            assert jwks.fetches == 1  # cached
            wrong_audience = auth0_token(old, "old", org_id, aud="https://other.api")
            assert_typed_error(await client.get("/api/v1/conversations", headers=bearer(wrong_audience)), 401,
                               "unauthorized")
            jwks.keys = [jwk_of(old, "old"), jwk_of(new, "new")]  # the IdP rotates its keys
            rotated = auth0_token(new, "new", org_id)
            assert (await client.get("/api/v1/conversations", headers=bearer(rotated))).status_code == 200
            assert jwks.fetches == 2


async def test_an_unreachable_jwks_url_is_a_503_not_a_crash(tmp_path: Path) -> None:
    key = rsa_key()
    config = auth0_config(jwks_url=f"http://127.0.0.1:{free_port()}/jwks.json")
    async with run_app(await settings_of(tmp_path / "data", auth=config)) as app:
        response = await anonymous(app).get("/api/v1/conversations",
                                            headers=bearer(auth0_token(key, "k", await admin_org(app))))
        assert_typed_error(response, 503, "not_ready")
