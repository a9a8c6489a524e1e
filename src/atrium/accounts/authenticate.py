"""One ``Authenticator``: any bearer credential -> the caller's ``Principal``.

* ``atr_...`` -> an Atrium API key (``ApiKeyAuthenticator``; cached, the gateway's hot path);
* a JWT whose issuer is ours -> an Atrium access token (``AccessTokens``);
* any other JWT -> the external identity provider, when one is configured.

Disabled users are refused on every path. What is learnt from the database (a key's principal, whether a
user is active, an external token's principal) is kept for ``auth.key_cache_ttl_s``; revocations and
disablements announced on the ``auth.revocations`` channel drop it at once on every replica.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import httpx
from cachetools import TTLCache
from sqlalchemy import select

from atrium.accounts.api_keys import REVOCATIONS_CHANNEL, ApiKeyAuthenticator, user_disabled_message
from atrium.accounts.external_idp import ExternalIdp, build_key_source
from atrium.accounts.principal import Principal
from atrium.accounts.tokens import AccessTokens, looks_like_jwt, signing_secret, unverified_issuer
from atrium.errors import Unauthorized
from atrium.settings import AuthSettings
from atrium.store.engine import Database
from atrium.store.models import User
from atrium.store.pubsub import PubSub, follow
from atrium.store.single_flight import SingleFlight

log = logging.getLogger(__name__)

_CACHE_SIZE = 10_000


class Authenticator:
    """Resolves bearer credentials; also the one place that hears (and announces) revocations."""

    def __init__(self, db: Database, *, api_keys: ApiKeyAuthenticator, access_tokens: AccessTokens,
                 external: ExternalIdp | None, pubsub: PubSub, cache_ttl_s: float) -> None:
        self._db = db
        self.api_keys = api_keys
        self.access_tokens = access_tokens
        self._external = external
        self._pubsub = pubsub
        self._active_users: TTLCache[str, bool] | None = (
            TTLCache(maxsize=_CACHE_SIZE, ttl=cache_ttl_s) if cache_ttl_s > 0 else None)
        self._user_reads: SingleFlight[str, bool] = SingleFlight()
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
            principal = self.access_tokens.verify(credential)
            if principal.user_id is None or not await self._user_active(principal.user_id):
                raise Unauthorized("The user is disabled or no longer exists.")
            return principal
        if self._external is None:
            raise Unauthorized("The token is invalid.")
        return await self._external_principal(credential)

    async def principal(self, credential: str) -> Principal | None:
        """Like ``authenticate``, with None instead of ``Unauthorized``."""
        try:
            return await self.authenticate(credential)
        except Unauthorized:
            return None

    async def _user_active(self, user_id: str) -> bool:
        cache = self._active_users
        active = cache.get(user_id) if cache is not None else None
        if active is None:
            active = await self._user_reads.run(user_id, lambda: self._read_user_active(user_id))
            if cache is not None:
                cache[user_id] = active
        return active

    async def _read_user_active(self, user_id: str) -> bool:
        async with self._db.system_session() as session:
            found = (await session.execute(
                select(User.disabled_at, User.is_service).where(User.id == user_id))).first()
        return found is not None and found.disabled_at is None and not found.is_service

    async def _external_principal(self, token: str) -> Principal:
        assert self._external is not None
        cache = self._external_tokens
        token_hash = hashlib.sha256(token.encode()).hexdigest()
        cached = cache.get(token_hash) if cache is not None else None
        if cached is None:
            cached = await self._external.principal(token)
            if cache is not None:
                cache[token_hash] = cached
        principal, expires_at = cached
        if expires_at <= time.time():
            raise Unauthorized("The token has expired.", code="token_expired")
        return principal

    async def announce_revocation(self, key_id: str) -> None:
        """An API key was revoked (after the commit): it stops working at once on every replica."""
        await self.api_keys.announce_revocation(key_id)

    async def announce_user_disabled(self, user_id: str) -> None:
        """A user was disabled (after the commit): their keys and tokens stop working on every replica."""
        self.forget_user(user_id)
        try:
            await self._pubsub.publish(REVOCATIONS_CHANNEL, user_disabled_message(user_id))
        except Exception:
            log.warning("could not announce a disabled user; other replicas catch up within the cache TTL",
                        exc_info=True)

    def forget_user(self, user_id: str) -> None:
        self.api_keys.forget_user(user_id)
        self._user_reads.forget(user_id)
        if self._active_users is not None:
            self._active_users.pop(user_id, None)
        if self._external_tokens is not None:
            for token_hash, (principal, _) in list(self._external_tokens.items()):
                if principal.user_id == user_id:
                    self._external_tokens.pop(token_hash, None)

    def forget_all(self) -> None:
        self.api_keys.forget_all()
        for cache in (self._active_users, self._external_tokens):
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
