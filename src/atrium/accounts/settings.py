"""The ``auth`` section: access and refresh tokens, login throttling, the API-key cache and an external
identity provider. Composed into ``Settings`` by ``atrium.settings``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

from atrium.accounts.principal import Role

JwtAlgorithm = Literal["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
                       "ES384", "ES512"]


class ExternalClaimSettings(BaseModel):
    """Where an external token keeps what Atrium needs: dotted paths into its claims (e.g.
    ``app_metadata.org_id``); ``None`` means the IdP does not send it."""

    model_config = {"extra": "forbid"}

    subject: str = "sub"
    email: str | None = "email"
    email_verified: str | None = "email_verified"  # None: trust the email claim as is
    name: str | None = "name"
    org: str | None = None
    division: str | None = None
    role: str | None = None  # a string or a list of strings, mapped through ``role_map``


class ExternalIdpSettings(BaseModel):
    """An external identity provider (Supabase, Auth0, Keycloak...) whose JWTs Atrium accepts as bearer
    tokens. Exactly one key source: ``secret`` (HS*) or ``jwks_url`` / ``jwks_file`` (RS*, PS*, ES*)."""

    model_config = {"extra": "forbid"}

    algorithms: list[JwtAlgorithm] = Field(["RS256"], min_length=1)
    secret: SecretStr | None = None
    jwks_url: str | None = None
    jwks_file: Path | None = None
    jwks_cache_ttl_s: float = Field(3600.0, gt=0)
    jwks_min_refresh_s: float = Field(30.0, ge=0)  # an unknown ``kid`` refetches the set at most this often
    issuer: str | None = None
    audience: str | None = None
    leeway_s: float = Field(30.0, ge=0)
    claims: ExternalClaimSettings = ExternalClaimSettings()
    role_map: dict[str, Role] = {}  # IdP role name -> Atrium role
    default_role: Role = "member"
    default_org_id: str | None = None  # when the token names no organisation (else it is refused)
    auto_provision: bool = False  # create a user row (and membership) on first sight of a verified email

    @model_validator(mode="after")
    def _one_key_source(self) -> ExternalIdpSettings:
        sources = [name for name in ("secret", "jwks_url", "jwks_file") if getattr(self, name) is not None]
        if len(sources) != 1:
            raise ValueError("auth.external needs exactly one of secret, jwks_url, jwks_file")
        symmetric = {alg.startswith("HS") for alg in self.algorithms}
        if len(symmetric) != 1 or symmetric.pop() != (self.secret is not None):
            raise ValueError("auth.external: HS* algorithms need `secret`; RS*/PS*/ES* need a JWKS, never both")
        if self.secret is not None and len(self.secret.get_secret_value()) < 32:
            raise ValueError("auth.external.secret must be at least 32 characters")
        return self


class AuthSettings(BaseModel):
    allow_anonymous: bool = False
    # How long a verified API key is trusted without another database lookup.
    key_cache_ttl_s: float = Field(10.0, ge=0)
    # Access tokens (JWT, HS256). Unset secret: generated once and kept in data_dir/jwt_secret.
    jwt_secret: SecretStr | None = None
    issuer: str = "atrium"
    audience: str = "atrium"
    access_token_ttl_s: int = Field(900, ge=1, le=86_400)
    refresh_token_ttl_s: int = Field(30 * 86_400, ge=60)
    # Login throttling (None: off): failed attempts per email, and all attempts per client IP.
    login_failures_per_minute_per_email: int | None = Field(10, ge=1)
    login_attempts_per_minute_per_ip: int | None = Field(60, ge=1)
    external: ExternalIdpSettings | None = None

    @field_validator("jwt_secret")
    @classmethod
    def _long_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            return None
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("auth.jwt_secret must be at least 32 characters")
        return value

    @model_validator(mode="after")
    def _distinct_issuers(self) -> AuthSettings:
        if self.external is not None and self.external.issuer == self.issuer:
            raise ValueError("auth.external.issuer must differ from auth.issuer (tokens are routed by issuer)")
        return self
