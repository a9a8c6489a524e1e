"""Atrium access tokens: short-lived JWTs (HS256, pyjwt) issued by ``POST /api/v1/auth/token``.

Claims: ``sub`` (user id), ``org``, ``div`` (division or null), ``role``, ``iat``, ``exp``, ``jti``, ``iss``,
``aud`` and ``typ`` (``access``). They are stateless: a token stays valid until it expires (minutes), while
the refresh token that renews it can be revoked at once (see ``accounts/refresh.py``).

The signing secret is ``auth.jwt_secret``; when unset, one is generated on first start and kept in
``data_dir/jwt_secret`` (mode 0600), so restarts keep sessions. Replicas that do not share a data dir must
share ``auth.jwt_secret``.
"""

from __future__ import annotations

import math
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import jwt

from atrium.accounts.principal import ROLE_RANK, Principal, Role
from atrium.errors import Unauthorized

ALGORITHM = "HS256"
TOKEN_TYPE = "access"
SECRET_FILE = "jwt_secret"
_REQUIRED = ["sub", "org", "role", "iat", "exp", "jti", "iss", "aud", "typ"]


@dataclass(frozen=True, slots=True)
class IssuedAccessToken:
    token: str
    expires_in: int
    jti: str


class AccessTokens:
    """Issues and verifies Atrium access tokens."""

    def __init__(self, secret: str, *, issuer: str, audience: str, ttl_s: int, leeway_s: float = 0.0) -> None:
        self._secret = secret
        self.issuer = issuer
        self._audience = audience
        self._ttl_s = ttl_s
        self._leeway_s = leeway_s

    def issue(self, *, user_id: str, org_id: str, role: Role, division_id: str | None = None) -> IssuedAccessToken:
        now = time.time()
        jti = uuid.uuid4().hex
        claims = {"sub": user_id, "org": org_id, "div": division_id, "role": role, "iat": int(now),
                  "exp": math.ceil(now + self._ttl_s), "jti": jti, "iss": self.issuer, "aud": self._audience,
                  "typ": TOKEN_TYPE}
        return IssuedAccessToken(jwt.encode(claims, self._secret, algorithm=ALGORITHM), self._ttl_s, jti)

    def verify(self, token: str) -> Principal:
        """The principal a valid token names; ``Unauthorized`` otherwise (code ``token_expired`` when it
        is only too old, so clients know to refresh)."""
        try:
            claims = jwt.decode(token, self._secret, algorithms=[ALGORITHM], audience=self._audience,
                                issuer=self.issuer, leeway=self._leeway_s,
                                options={"require": _REQUIRED, "enforce_minimum_key_length": True})
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("The access token has expired.", code="token_expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("The access token is invalid.") from exc
        return _principal(claims)


def _principal(claims: dict[str, Any]) -> Principal:
    role, org, sub, div = claims.get("role"), claims.get("org"), claims.get("sub"), claims.get("div")
    if (claims.get("typ") != TOKEN_TYPE or role not in ROLE_RANK or not isinstance(org, str)
            or not isinstance(sub, str) or not (div is None or isinstance(div, str))):
        raise Unauthorized("The access token is invalid.")
    return Principal(org_id=org, user_id=sub, role=role, division_id=div, via="access_token")


def unverified_issuer(token: str) -> str | None:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    issuer = claims.get("iss")
    return issuer if isinstance(issuer, str) else None


def looks_like_jwt(credential: str) -> bool:
    return credential.count(".") == 2 and len(credential) <= 16_384


async def signing_secret(configured: str | None, data_dir: Path) -> str:
    """``configured`` if set; else the secret in ``data_dir/jwt_secret``, created (0600) if missing."""
    if configured:
        return configured
    return await anyio.to_thread.run_sync(_load_or_create_secret, data_dir / SECRET_FILE)


def _load_or_create_secret(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two processes starting on one data dir agree on the first secret written.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # the creator may not have written it yet
            secret = path.read_text().strip()
            if secret:
                return secret
            time.sleep(0.02)
        raise RuntimeError(f"{path} is empty: delete it or set auth.jwt_secret") from None
    secret = secrets.token_urlsafe(48)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret)
    return secret
