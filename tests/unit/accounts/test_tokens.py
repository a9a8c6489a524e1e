"""Atrium access tokens: claims, expiry, forgery, ``alg: none``, the persisted signing secret."""

from __future__ import annotations

import base64
import json
import stat
import time
from pathlib import Path

import jwt
import pytest

from atrium.accounts.tokens import AccessTokens, looks_like_jwt, signing_secret, unverified_issuer
from atrium.errors import Unauthorized

SECRET = "k" * 48


def tokens(ttl_s: int = 900, secret: str = SECRET) -> AccessTokens:
    return AccessTokens(secret, issuer="atrium", audience="atrium", ttl_s=ttl_s)


def test_issue_and_verify_round_trip() -> None:
    issued = tokens().issue(user_id="u1", org_id="o1", role="admin", division_id="d1")
    claims = jwt.decode(issued.token, SECRET, algorithms=["HS256"], audience="atrium")
    assert claims["sub"] == "u1" and claims["org"] == "o1" and claims["div"] == "d1" and claims["role"] == "admin"
    assert claims["iss"] == "atrium" and claims["typ"] == "access" and claims["jti"] == issued.jti
    assert 900 <= claims["exp"] - claims["iat"] <= 901
    principal = tokens().verify(issued.token)
    assert (principal.user_id, principal.org_id, principal.role, principal.division_id, principal.via) == (
        "u1", "o1", "admin", "d1", "access_token")
    assert looks_like_jwt(issued.token) and unverified_issuer(issued.token) == "atrium"


def test_expired_tokens_say_so() -> None:
    now = int(time.time())
    token = jwt.encode({"sub": "u", "org": "o", "div": None, "role": "member", "iat": now - 100, "exp": now - 1,
                        "jti": "j", "iss": "atrium", "aud": "atrium", "typ": "access"}, SECRET, algorithm="HS256")
    with pytest.raises(Unauthorized) as caught:
        tokens().verify(token)
    assert caught.value.code == "token_expired"


def _unsigned(claims: dict[str, object]) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


@pytest.mark.parametrize("case", ["other_secret", "alg_none", "wrong_audience", "wrong_issuer", "refresh_typ",
                                  "bad_role", "missing_jti"])
def test_bad_tokens_are_refused(case: str) -> None:
    good = jwt.decode(tokens().issue(user_id="u", org_id="o", role="member").token, SECRET, algorithms=["HS256"],
                      audience="atrium")
    changed = {"wrong_audience": {"aud": "other"}, "wrong_issuer": {"iss": "other"}, "refresh_typ": {"typ": "refresh"},
               "bad_role": {"role": "god"}}.get(case, {})
    claims = {**good, **changed}
    if case == "missing_jti":
        del claims["jti"]
    token = (_unsigned(claims) if case == "alg_none"
             else jwt.encode(claims, "x" * 48 if case == "other_secret" else SECRET, algorithm="HS256"))
    with pytest.raises(Unauthorized) as caught:
        tokens().verify(token)
    assert caught.value.code == "unauthorized"


async def test_the_generated_secret_is_private_and_stable(tmp_path: Path) -> None:
    first = await signing_secret(None, tmp_path / "data")
    assert len(first) >= 48
    path = tmp_path / "data" / "jwt_secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert await signing_secret(None, tmp_path / "data") == first
    assert await signing_secret("c" * 40, tmp_path / "data") == "c" * 40
