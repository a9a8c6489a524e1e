"""One ``Authenticator``: any bearer credential -> the caller's ``Principal``.

* ``atr_...`` -> an Atrium API key (``ApiKeyAuthenticator``; cached, the gateway's hot path);
* a JWT whose issuer is ours -> an Atrium access token (``AccessTokens``);
* any other JWT -> the external identity provider, when one is configured.

A token says who the caller is (user and organisation), never what they may do: the role and division
come from the user's current membership in the token's organisation, read per request. Disabled users,
service accounts and users who are no longer members are refused on every path; a key acts with at most
its user's current role (see ``api_keys``). What is learnt from the database (a key's principal, a user's
standing in an organisation, an external token's principal) is kept for ``auth.key_cache_ttl_s``;
revocations and changes to a user (role, division, removal, disable) announced on the ``auth.revocations``
channel drop it at once on every replica.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import httpx
from cachetools import TTLCache

from atrium.accounts.api_keys import REVOCATIONS_CHANNEL, ApiKeyAuthenticator, user_disabled_message
from atrium.accounts.external_idp import ExternalIdp, build_key_source
from atrium.accounts.principal import Principal
from atrium.accounts.settings import AuthSettings
from atrium.accounts.standing import Standing, read_standing
from atrium.accounts.tokens import AccessTokens, looks_like_jwt, signing_secret, unverified_issuer
from atrium.errors import Unauthorized
from atrium.store.engine import Database
from atrium.store.ports import PubSub, follow
from atrium.store.single_flight import SingleFlight

log = logging.getLogger(__name__)

_CACHE_SIZE = 10_000
_UNKNOWN = object()


class Authenticator:
    """Resolves bearer credentials; also the one place that hears (and announces) revocations."""

    def __init__(self, db: Database, *, api_keys: ApiKeyAuthenticator, access_tokens: AccessTokens,
                 external: ExternalIdp | None, pubsub: PubSub, cache_ttl_s: float) -> None:
        self._db = db
        self.api_keys = api_keys
        self.access_tokens = access_tokens
        self._external = external
        self._pubsub = pubsub
        # (user id, org id) -> the user's standing there (None: refused), and the reads under way.
        self._standings: TTLCache[tuple[str, str], Standing | None] | None = (
            TTLCache(maxsize=_CACHE_SIZE, ttl=cache_ttl_s) if cache_ttl_s > 0 else None)
        self._standing_reads: SingleFlight[tuple[str, str, float], tuple[Standing | None, float]] = (
            SingleFlight())
        # When each user was last forgotten: a read that began earlier may hold what was true before the
        # change, so it answers its own callers but is not cached.
        self._forgotten: TTLCache[str, float] = TTLCache(maxsize=_CACHE_SIZE, ttl=max(cache_ttl_s, 1.0))
        self._external_tokens: TTLCache[str, tuple[Principal, float]] | None = (
            TTLCache(maxsize=_CACHE_SIZE, ttl=cache_ttl_s) if cache_ttl_s > 0 else None)

    async def authenticate(self, credential: str) -> Principal:
        """The principal ``credential`` names; ``Unauthorized`` (with a message safe to show) otherwise."""
        if credential.startswith("atr_"):
            principal = await self.api_keys.principal(credential)
            if principal is None:
                raise Unauthorized("The API key is invalid, expired or revoked.")
            return principal
        if not looks_like_jwt(credential):
            raise Unauthorized("The credential is not an API key or a token.")
        if unverified_issuer(credential) == self.access_tokens.issuer:
            claimed = self.access_tokens.verify(credential)
            standing = (await self.standing(claimed.user_id, claimed.org_id)
                        if claimed.user_id is not None else None)
            if standing is None:
                raise Unauthorized("The user is disabled, no longer exists or is no longer a member.")
            # The token names the user and the organisation; the role and division are the current ones.
            return Principal(org_id=claimed.org_id, user_id=claimed.user_id, role=standing.role,
                             division_id=standing.division_id, via="access_token")
        if self._external is None:
            raise Unauthorized("The token is invalid.")
        return await self._external_principal(credential)

    async def principal(self, credential: str) -> Principal | None:
        """Like ``authenticate``, with None instead of ``Unauthorized``."""
        try:
            return await self.authenticate(credential)
        except Unauthorized:
            return None

    async def standing(self, user_id: str, org_id: str) -> Standing | None:
        """The user's current role and division in ``org_id`` (cached; None: refused)."""
        cache = self._standings
        key = (user_id, org_id)
        cached = cache.get(key, _UNKNOWN) if cache is not None else _UNKNOWN
        if cached is not _UNKNOWN:
            return cached  # type: ignore[return-value]
        # A read that began before the user was last forgotten is not joined: the next request after a
        # change reads again.
        forgotten = self._forgotten.get(user_id, -1.0)
        standing, started = await self._standing_reads.run(
            (user_id, org_id, forgotten), lambda: self._read_standing(user_id, org_id))
        if cache is not None and self._forgotten.get(user_id, -1.0) < started:
            cache[key] = standing
        return standing

    async def _read_standing(self, user_id: str, org_id: str) -> tuple[Standing | None, float]:
        started = time.monotonic()
        async with self._db.system_session() as session:
            return await read_standing(session, user_id, org_id), started

    async def _external_principal(self, token: str) -> Principal:
        assert self._external is not None
        cache = self._external_tokens
        token_hash = hashlib.sha256(token.encode()).hexdigest()
        cached = cache.get(token_hash) if cache is not None else None
        if cached is None:
            started = time.monotonic()
            cached = await self._external.principal(token)
            user_id = cached[0].user_id
            if cache is not None and (user_id is None or self._forgotten.get(user_id, -1.0) < started):
                cache[token_hash] = cached
        principal, expires_at = cached
        if expires_at <= time.time():
            raise Unauthorized("The token has expired.", code="token_expired")
        return principal

    async def announce_revocation(self, key_id: str) -> None:
        """An API key was revoked (after the commit): it stops working at once on every replica."""
        await self.api_keys.announce_revocation(key_id)

    async def announce_user_changed(self, user_id: str) -> None:
        """A user was changed (after the commit): a role or division changed, a membership was added or
        removed, the user was disabled, enabled or deleted. Every replica forgets what it cached about them,
        so their keys and tokens act with what the database says from the next request on."""
        self.forget_user(user_id)
        try:
            await self._pubsub.publish(REVOCATIONS_CHANNEL, user_disabled_message(user_id))
        except Exception:
            log.warning("could not announce a changed user; other replicas catch up within the cache TTL",
                        exc_info=True)

    async def announce_user_disabled(self, user_id: str) -> None:
        """A user was disabled or deleted (after the commit): see ``announce_user_changed``."""
        await self.announce_user_changed(user_id)

    def forget_user(self, user_id: str) -> None:
        self._forgotten[user_id] = time.monotonic()
        self.api_keys.forget_user(user_id)
        if self._standings is not None:
            for key in [key for key in list(self._standings.keys()) if key[0] == user_id]:
                self._standings.pop(key, None)
        if self._external_tokens is not None:
            for token_hash, (principal, _) in list(self._external_tokens.items()):
                if principal.user_id == user_id:
                    self._external_tokens.pop(token_hash, None)

    def forget_all(self) -> None:
        self.api_keys.forget_all()
        for cache in (self._standings, self._external_tokens):
            if cache is not None:
                cache.clear()

    def apply(self, message: str) -> None:
        """Act on one ``auth.revocations`` message (``key:<id>`` or ``user:<id>``)."""
        kind, _, ident = message.partition(":")
        if kind == "key" and ident:
            self.api_keys.forget_key(ident)
        elif kind == "user" and ident:
            self.forget_user(ident)

    async def listen_for_revocations(self) -> None:
        """Background loop (one per process): apply every revocation announced by any replica. When the
        subscription breaks, messages may have been missed, so every cache is dropped before resubscribing."""
        await follow(self._pubsub, REVOCATIONS_CHANNEL, self.apply, on_gap=self.forget_all)


async def build_authenticator(settings: AuthSettings, *, data_dir: Path, db: Database, pubsub: PubSub,
                              http_client: httpx.AsyncClient) -> Authenticator:
    secret = await signing_secret(settings.jwt_secret.get_secret_value() if settings.jwt_secret else None, data_dir)
    access_tokens = AccessTokens(secret, issuer=settings.issuer, audience=settings.audience,
                                 ttl_s=settings.access_token_ttl_s)
    external = (ExternalIdp(settings.external, build_key_source(settings.external, http_client), db)
                if settings.external is not None else None)
    api_keys = ApiKeyAuthenticator(db, ttl_s=settings.key_cache_ttl_s, pubsub=pubsub)
    return Authenticator(db, api_keys=api_keys, access_tokens=access_tokens, external=external, pubsub=pubsub,
                         cache_ttl_s=settings.key_cache_ttl_s)
