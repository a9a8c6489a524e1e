"""External identity providers (Supabase, Auth0, Keycloak, Cognito...): their JWTs as Atrium bearer tokens.

Verification: the signature with a shared secret (HS*, e.g. Supabase's JWT secret) or with the public keys of
a JWKS (RS*/PS*/ES*, e.g. Auth0's ``/.well-known/jwks.json``), then ``exp``/``nbf``/``iat`` (with
``leeway_s``), the issuer and the audience when configured. The algorithm allow-list comes from the
configuration, never from the token, and symmetric and asymmetric algorithms are never mixed.

JWKS are cached for ``jwks_cache_ttl_s``; a token whose ``kid`` is unknown refetches the set (at most every
``jwks_min_refresh_s``), so key rotation at the IdP needs no restart. A URL is fetched with the injected
HTTP client (pyjwt's ``PyJWKClient`` would do blocking I/O on the event loop); a file is read in a thread.
If a refetch fails, the last good set keeps serving.

Claims map to a tenant by configuration: ``claims.org`` / ``claims.division`` / ``claims.role`` are dotted
paths (``app_metadata.org_id``; a key that itself holds dots, like Auth0's namespaced
``https://example.com/roles``, is matched whole), ``role_map`` turns IdP role names into Atrium roles.
A verified email links the token to an existing user of that organisation; with ``auto_provision`` an
unknown one gets a user row (and membership) on first sight. A linked user acts with the lower of the
token's role and their membership's current role, in the membership's division when it has one (else the
token's): demoting, moving or removing the user in Atrium takes effect at once, whatever the IdP says.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import anyio
import httpx
import jwt
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.accounts import audit
from atrium.accounts.principal import ROLE_RANK, Principal, Role
from atrium.accounts.settings import ExternalIdpSettings
from atrium.accounts.standing import read_standing
from atrium.errors import NotReady, Unauthorized
from atrium.store.engine import Database
from atrium.store.models import Division, Membership, Organization, User

log = logging.getLogger(__name__)

_JWKS_FETCH_TIMEOUT_S = 10.0
_MAX_JWKS_BYTES = 1_000_000


class KeySource(Protocol):
    """Gives the key that verifies a token, from the token's (unverified) header."""

    async def key_for(self, header: Mapping[str, Any]) -> Any: ...


class SharedSecret:
    """HS* tokens: one secret shared with the IdP (Supabase's "JWT secret")."""

    def __init__(self, secret: str) -> None:
        self._secret = secret

    async def key_for(self, header: Mapping[str, Any]) -> Any:
        return self._secret


class CachedJwks:
    """A JWKS loaded by ``fetch`` (an async callable returning the JSON document), cached with a TTL."""

    def __init__(self, fetch: Any, *, ttl_s: float, min_refresh_s: float, source: str) -> None:
        self._fetch = fetch
        self._ttl_s = ttl_s
        self._min_refresh_s = min_refresh_s
        self._source = source
        self._keys: jwt.PyJWKSet | None = None
        self._fresh_until = 0.0
        self._last_fetch = -float("inf")
        self._lock = asyncio.Lock()

    async def key_for(self, header: Mapping[str, Any]) -> Any:
        kid = header.get("kid")
        key = _pick(await self._key_set(force=False), kid)
        if key is None:  # perhaps the IdP rotated its keys
            key = _pick(await self._key_set(force=True), kid)
        if key is None:
            raise Unauthorized("The token was signed with an unknown key.")
        return key.key

    async def _key_set(self, *, force: bool) -> jwt.PyJWKSet:
        now = time.monotonic()
        if self._keys is not None and now < self._fresh_until and not force:
            return self._keys
        async with self._lock:
            now = time.monotonic()
            recently = now - self._last_fetch < self._min_refresh_s
            if self._keys is not None and ((not force and now < self._fresh_until) or (force and recently)):
                return self._keys
            self._last_fetch = now
            try:
                document = await self._fetch()
                keys = jwt.PyJWKSet.from_dict(document if isinstance(document, dict) else {})
            except Exception as exc:
                if self._keys is not None:
                    log.warning("could not refresh the JWKS from %s; keeping the last good one", self._source)
                    return self._keys
                log.warning("could not load the JWKS from %s: %s", self._source, type(exc).__name__)
                raise NotReady("The identity provider's signing keys cannot be loaded.") from exc
            self._keys, self._fresh_until = keys, now + self._ttl_s
            return keys


def _pick(keys: jwt.PyJWKSet, kid: Any) -> jwt.PyJWK | None:
    usable = [key for key in keys.keys if key.public_key_use in (None, "sig")]
    if kid is None:
        return usable[0] if len(usable) == 1 else None
    return next((key for key in usable if key.key_id == kid), None)


def jwks_from_url(url: str, http_client: httpx.AsyncClient, *, ttl_s: float, min_refresh_s: float) -> CachedJwks:
    async def fetch() -> Any:
        response = await http_client.get(url, timeout=_JWKS_FETCH_TIMEOUT_S,
                                         headers={"Accept": "application/json"})
        response.raise_for_status()
        if len(response.content) > _MAX_JWKS_BYTES:
            raise ValueError("JWKS too large")
        return response.json()

    return CachedJwks(fetch, ttl_s=ttl_s, min_refresh_s=min_refresh_s, source=url)


def jwks_from_file(path: Path, *, ttl_s: float, min_refresh_s: float) -> CachedJwks:
    async def fetch() -> Any:
        return json.loads(await anyio.Path(path).read_text())

    return CachedJwks(fetch, ttl_s=ttl_s, min_refresh_s=min_refresh_s, source=str(path))


def build_key_source(settings: ExternalIdpSettings, http_client: httpx.AsyncClient) -> KeySource:
    if settings.secret is not None:
        return SharedSecret(settings.secret.get_secret_value())
    if settings.jwks_url is not None:
        return jwks_from_url(settings.jwks_url, http_client, ttl_s=settings.jwks_cache_ttl_s,
                             min_refresh_s=settings.jwks_min_refresh_s)
    assert settings.jwks_file is not None  # the settings validator demands one source
    return jwks_from_file(settings.jwks_file, ttl_s=settings.jwks_cache_ttl_s,
                          min_refresh_s=settings.jwks_min_refresh_s)


def claim(claims: Mapping[str, Any], path: str) -> Any:
    """The value at dotted ``path`` in ``claims`` (None if absent). A key holding dots is matched whole
    before the path is split, longest key first."""
    if path in claims:
        return claims[path]
    for cut in range(len(path) - 1, 0, -1):
        if path[cut] == "." and path[:cut] in claims:
            inner = claims[path[:cut]]
            return claim(inner, path[cut + 1:]) if isinstance(inner, Mapping) else None
    return None


class ExternalIdp:
    """Verifies an external IdP's tokens and maps them to a Principal (``via="external"``)."""

    def __init__(self, settings: ExternalIdpSettings, keys: KeySource, db: Database) -> None:
        self._settings = settings
        self._keys = keys
        self._db = db

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims if it is valid; ``Unauthorized`` otherwise."""
        settings = self._settings
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized("The token is invalid.") from exc
        if header.get("alg") not in settings.algorithms:
            raise Unauthorized("The token is invalid.")
        key = await self._keys.key_for(header)
        required = ["exp", "iat", "sub", *(["iss"] if settings.issuer else []), *(["aud"] if settings.audience else [])]
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=list(settings.algorithms), audience=settings.audience,
                issuer=settings.issuer, leeway=settings.leeway_s,
                options={"require": required, "verify_aud": settings.audience is not None})
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("The token has expired.", code="token_expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("The token is invalid.") from exc
        return claims

    async def principal(self, token: str) -> tuple[Principal, float]:
        """The principal the token names, and the token's expiry (Unix time)."""
        claims = await self.verify(token)
        return await self.resolve(claims), float(claims["exp"])

    def role_of(self, claims: Mapping[str, Any]) -> Role:
        settings = self._settings
        raw = claim(claims, settings.claims.role) if settings.claims.role else None
        names = raw if isinstance(raw, list) else [raw]
        known: list[Role] = [settings.role_map[name] for name in names
                             if isinstance(name, str) and name in settings.role_map]
        return max(known, key=ROLE_RANK.__getitem__) if known else settings.default_role

    async def resolve(self, claims: Mapping[str, Any]) -> Principal:
        settings, paths = self._settings, self._settings.claims
        subject = claim(claims, paths.subject)
        org_id = (claim(claims, paths.org) if paths.org else None) or settings.default_org_id
        division_id = claim(claims, paths.division) if paths.division else None
        if not isinstance(subject, str) or not subject:
            raise Unauthorized("The token names no subject.")
        if not isinstance(org_id, str):
            raise Unauthorized("The token names no organisation.")
        if division_id is not None and not isinstance(division_id, str):
            raise Unauthorized("The token's division is invalid.")
        role = self.role_of(claims)
        email = claim(claims, paths.email) if paths.email else None
        verified = paths.email_verified is None or claim(claims, paths.email_verified) in (True, "true")
        email = email.strip().lower() if isinstance(email, str) and verified and 3 <= len(email) <= 320 else None
        name = claim(claims, paths.name) if paths.name else None
        name = name[:200] if isinstance(name, str) else ""
        standing = None
        for attempt in range(2):
            try:
                async with self._db.system_session() as session:
                    user_id = await self._link_user(session, org_id, division_id, role, email, name, subject)
                    if user_id is not None:
                        standing = await read_standing(session, user_id, org_id)
                break
            except IntegrityError:  # another request provisioned the same user first
                if attempt:
                    raise
        if user_id is not None:
            # A linked user acts with at most their membership's current role, in its division when it has
            # one: a demotion or a move in Atrium takes effect whatever the IdP's token still says.
            if standing is None:
                raise Unauthorized("The user is disabled or no longer a member of the organisation.")
            if ROLE_RANK[standing.role] < ROLE_RANK[role]:
                role = standing.role
            division_id = standing.division_id if standing.division_id is not None else division_id
        return Principal(org_id=org_id, user_id=user_id, role=role, division_id=division_id, via="external")

    async def _link_user(self, session: AsyncSession, org_id: str, division_id: str | None, role: Role,
                         email: str | None, name: str, subject: str) -> str | None:
        if await session.get(Organization, org_id) is None:
            raise Unauthorized("The token's organisation is unknown.")
        if division_id is not None and await session.scalar(
                select(Division.id).where(Division.id == division_id, Division.org_id == org_id)) is None:
            raise Unauthorized("The token's division is unknown.")
        if email is None:
            return None
        user = await session.scalar(select(User).where(User.email == email))
        if user is not None and (user.disabled_at is not None or user.is_service):
            raise Unauthorized("The user is disabled.")
        member = user is not None and (user.org_id == org_id or await session.scalar(
            select(Membership.id).where(Membership.user_id == user.id, Membership.org_id == org_id)) is not None)
        if member:
            return user.id if user is not None else None
        if not self._settings.auto_provision:
            return None
        if user is None:
            user = User(org_id=org_id, email=email, name=name, role=role)
            session.add(user)
            await session.flush()
        session.add(Membership(org_id=org_id, user_id=user.id, division_id=division_id, role=role))
        await session.flush()
        await audit.record(session, "auth.external_provision", org_id=org_id, target_type="user",
                           target_id=user.id, details={"subject": subject[:200], "email": email})
        return user.id
