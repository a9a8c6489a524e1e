"""External IdP pieces: dotted claim paths, role mapping, the JWKS cache (TTL, refetch on an unknown kid,
keeping the last good set), and the configuration's guard rails."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import ValidationError

from atrium.accounts.external_idp import ExternalIdp, SharedSecret, claim, jwks_from_file
from atrium.errors import NotReady, Unauthorized
from atrium.settings import AuthSettings, ExternalIdpSettings
from atrium.store.engine import Database

SECRET = "z" * 40


def test_claim_follows_dotted_paths_and_whole_keys_with_dots() -> None:
    claims = {"app_metadata": {"org_id": "o1", "deep": {"x": 1}}, "https://atrium.example/roles": ["admin"],
              "plain": "p"}
    assert claim(claims, "app_metadata.org_id") == "o1"
    assert claim(claims, "app_metadata.deep.x") == 1
    assert claim(claims, "https://atrium.example/roles") == ["admin"]
    assert claim(claims, "plain") == "p"
    assert claim(claims, "app_metadata.missing") is None
    assert claim(claims, "plain.more") is None


def idp(db: Database, **settings: Any) -> ExternalIdp:
    config = ExternalIdpSettings(algorithms=["HS256"], secret=SECRET, **settings)
    return ExternalIdp(config, SharedSecret(SECRET), db)


def test_roles_map_through_the_role_map_and_the_highest_wins(db: Database) -> None:
    mapper = idp(db, claims={"role": "roles"}, role_map={"reader": "viewer", "boss": "owner", "dev": "member"},
                 default_role="viewer")
    assert mapper.role_of({"roles": ["reader", "dev"]}) == "member"
    assert mapper.role_of({"roles": "boss"}) == "owner"
    assert mapper.role_of({"roles": ["owner"]}) == "viewer"  # only mapped names count
    assert mapper.role_of({}) == "viewer"


async def test_verify_checks_issuer_audience_and_expiry(db: Database) -> None:
    verifier = idp(db, issuer="https://idp", audience="api", claims={"org": "org"})
    now = int(time.time())
    base = {"sub": "s", "iss": "https://idp", "aud": "api", "iat": now, "exp": now + 60, "org": "org-a"}
    principal, expires = await verifier.principal(jwt.encode(base, SECRET, algorithm="HS256"))
    assert principal.org_id == "org-a" and principal.via == "external" and expires == now + 60
    for change in ({"iss": "https://other"}, {"aud": "web"}, {"exp": now - 3600, "iat": now - 7200},
                   {"org": "org-zzz"}, {"sub": None}):
        token = jwt.encode({k: v for k, v in {**base, **change}.items() if v is not None}, SECRET, algorithm="HS256")
        with pytest.raises(Unauthorized):
            await verifier.principal(token)
    rs_token = jwt.encode(base, rsa.generate_private_key(public_exponent=65537, key_size=2048), algorithm="RS256")
    with pytest.raises(Unauthorized):  # an algorithm the configuration does not allow
        await verifier.principal(rs_token)


def jwk(kid: str) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {**jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid}


async def test_the_jwks_cache_refetches_on_an_unknown_kid_and_keeps_the_last_good_set(tmp_path: Path) -> None:
    path = anyio.Path(tmp_path / "jwks.json")
    await path.write_text(json.dumps({"keys": [jwk("a")]}))
    source = jwks_from_file(Path(path), ttl_s=3600, min_refresh_s=0)
    assert await source.key_for({"kid": "a"}) is not None
    await path.write_text(json.dumps({"keys": [jwk("a"), jwk("b")]}))
    assert await source.key_for({"kid": "b"}) is not None  # unknown kid: reloaded
    await path.write_text("not json")
    assert await source.key_for({"kid": "a"}) is not None  # still cached
    with pytest.raises(Unauthorized):
        await source.key_for({"kid": "c"})  # reload fails, the last good set stays, "c" is not in it
    assert await source.key_for({"kid": "b"}) is not None


async def test_unknown_kids_do_not_hammer_the_idp(tmp_path: Path) -> None:
    path = anyio.Path(tmp_path / "jwks.json")
    await path.write_text(json.dumps({"keys": [jwk("a")]}))
    source = jwks_from_file(Path(path), ttl_s=3600, min_refresh_s=60)
    assert await source.key_for({"kid": "a"}) is not None
    await path.write_text(json.dumps({"keys": [jwk("a"), jwk("b")]}))
    with pytest.raises(Unauthorized):
        await source.key_for({"kid": "b"})  # the set was loaded under a minute ago: not reloaded yet


async def test_no_jwks_at_all_is_not_ready(tmp_path: Path) -> None:
    source = jwks_from_file(tmp_path / "missing.json", ttl_s=60, min_refresh_s=0)
    with pytest.raises(NotReady):
        await source.key_for({"kid": "a"})


@pytest.mark.parametrize("config", [
    {"algorithms": ["HS256"]},  # no key source
    {"algorithms": ["HS256"], "secret": SECRET, "jwks_url": "https://idp/jwks"},  # two sources
    {"algorithms": ["RS256"], "secret": SECRET},  # RS with a secret
    {"algorithms": ["HS256", "RS256"], "jwks_url": "https://idp/jwks"},  # mixed
    {"algorithms": ["HS256"], "secret": "short"},
    {"algorithms": ["none"], "secret": SECRET},
])
def test_bad_external_configurations_are_refused(config: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ExternalIdpSettings(**config)


def test_auth_settings_guard_rails() -> None:
    with pytest.raises(ValidationError):
        AuthSettings(jwt_secret="too-short")
    with pytest.raises(ValidationError):
        AuthSettings(external={"algorithms": ["HS256"], "secret": SECRET, "issuer": "atrium"})
    defaults = AuthSettings()
    assert (defaults.access_token_ttl_s, defaults.refresh_token_ttl_s, defaults.jwt_secret) == (900, 30 * 86400, None)
    assert "x" * 40 not in repr(AuthSettings(jwt_secret="x" * 40))
