"""Nested settings: defaults < config file (``ATRIUM_CONFIG``, YAML) < ``ATRIUM_`` environment variables.

Nested fields use ``__`` in the environment: ``ATRIUM_CHAT__PROVIDER=fake``. Settings are built and validated
in ``create_app`` (or the CLI), never at import time.
"""

from __future__ import annotations

import ipaddress
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

LocalModelName = Literal["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"]


class OpenAISettings(BaseModel):
    """An OpenAI-format provider (OpenAI itself, or any compatible server) used when ``chat.provider`` is
    ``openai``."""

    base_url: str = "https://api.openai.com/v1"
    api_key: SecretStr | None = None
    model: str = "gpt-4o-mini"


class ChatSettings(BaseModel):
    provider: Literal["local", "fake", "openai"] = "local"
    openai: OpenAISettings = OpenAISettings()
    local_model: LocalModelName = "qwen2.5-coder-1.5b"
    n_ctx: int = Field(4096, ge=512, le=32768)
    n_threads: int = Field(1, ge=1)
    n_threads_batch: int = Field(2, ge=1)
    max_tokens: int = Field(384, ge=1, le=4096)
    temperature: float = Field(0.1, ge=0.0, le=2.0)
    startup_timeout_s: float = Field(180.0, gt=0)
    request_timeout_s: float = Field(300.0, gt=0)
    fake_token_delay_s: float = Field(0.0, ge=0)


ProviderKind = Literal["openai", "azure", "anthropic", "groq", "tgi", "vllm", "ollama", "llamacpp", "local", "fake"]
Capability = Literal["tools", "json", "vision"]
RouteStrategy = Literal["fallback", "lowest_cost", "lowest_latency", "weighted"]


class ProviderSettings(BaseModel):
    """Who to call: one upstream account or server. The wire format follows from ``kind`` (openai, groq,
    tgi, vllm, ollama and llamacpp speak OpenAI's format; azure is OpenAI's with deployments; anthropic its
    own; local is the managed llama.cpp model; fake answers canned text, for tests and demos)."""

    model_config = {"extra": "forbid"}

    kind: ProviderKind
    base_url: str | None = None  # default per kind (see gateway/providers/registry.py)
    api_key: SecretStr | None = None
    api_key_env: str | None = None  # name of an environment variable holding the key
    api_key_file: Path | None = None  # a file holding the key (Docker/Kubernetes secrets)
    api_version: str | None = None  # azure: api-version query; anthropic: anthropic-version header
    headers: dict[str, str] = {}
    timeout_s: float = Field(60.0, gt=0)  # longest silence between two chunks
    connect_timeout_s: float = Field(5.0, gt=0)
    fake_answer: str | None = None
    fake_token_delay_s: float = Field(0.0, ge=0)


class ModelSettings(BaseModel):
    """One catalogue entry: a name callers use (plus aliases), the provider that serves it and the
    upstream model id (for azure: the deployment name). Prices are USD per 1M tokens; unset prices come
    from the default table in gateway/pricing.py (0 when unknown)."""

    model_config = {"extra": "forbid"}

    provider: str
    model: str
    kind: Literal["chat", "embedding"] = "chat"
    aliases: list[str] = []
    context_window: int = Field(8192, ge=256)
    max_output_tokens: int = Field(4096, ge=1)
    capabilities: list[Capability] = []
    input_price_per_1m: float | None = Field(None, ge=0)
    output_price_per_1m: float | None = Field(None, ge=0)
    local: bool | None = None  # data stays on this host; default: true for local/llamacpp/ollama providers
    weight: float = Field(1.0, gt=0)  # for the weighted strategy
    dimensions: int | None = Field(None, ge=8)  # embedding models


class RouteSettings(BaseModel):
    """An ordered list of catalogue models and how to pick among them; the rest are the fallback chain."""

    model_config = {"extra": "forbid"}

    models: list[str] = Field(min_length=1)
    strategy: RouteStrategy = "fallback"


class RetrySettings(BaseModel):
    attempts: int = Field(3, ge=1, le=10)  # tries per model, the first included
    initial_delay_s: float = Field(0.2, ge=0)
    max_delay_s: float = Field(5.0, ge=0)
    jitter_s: float = Field(0.2, ge=0)
    max_retry_after_s: float = Field(10.0, ge=0)  # a longer Retry-After moves on to the next model instead


class BreakerSettings(BaseModel):
    failure_threshold: int = Field(5, ge=1)  # consecutive failures that open the circuit
    reset_timeout_s: float = Field(30.0, gt=0)  # open -> half-open after this long
    half_open_max_calls: int = Field(1, ge=1)  # trial calls let through while half-open


class CacheSettings(BaseModel):
    enabled: bool = True
    ttl_s: float = Field(300.0, gt=0)
    max_entries: int = Field(10_000, ge=1)  # in-process cache only
    max_entry_bytes: int = Field(256_000, ge=1024)


class TenantPolicySettings(BaseModel):
    model_config = {"extra": "forbid"}

    local_only: bool = False  # e.g. "PII stays local": only models with local=true serve this tenant
    allowed_models: list[str] | None = None  # None: the whole catalogue
    max_output_price_per_1m: float | None = Field(None, ge=0)  # a cost tier: dearer models are left out


class GatewaySettings(BaseModel):
    """The model catalogue, routing and resilience. With no ``models``, the catalogue is the one model
    that ``chat.provider`` names (the embedded default: the local model)."""

    providers: dict[str, ProviderSettings] = {}
    models: dict[str, ModelSettings] = {}
    routes: dict[str, RouteSettings] = {}  # by task (chat, qa, artifact, classify, summarize) or any name
    default_model: str | None = None  # used when a request names none; default: the first model
    tenants: dict[str, TenantPolicySettings] = {}  # by organisation id
    retry: RetrySettings = RetrySettings()
    breaker: BreakerSettings = BreakerSettings()
    cache: CacheSettings = CacheSettings()
    attempt_timeout_s: float = Field(30.0, gt=0)  # one attempt, until its first token
    total_timeout_s: float = Field(300.0, gt=0)  # the whole call, every attempt and the stream included

    @model_validator(mode="after")
    def _references_exist(self) -> GatewaySettings:
        for name, model in self.models.items():
            if model.provider not in self.providers:
                raise ValueError(f"gateway.models.{name}.provider: no provider named {model.provider!r}")
        known = set(self.models) | {a for m in self.models.values() for a in m.aliases}
        for route_name, route in self.routes.items():
            for model_name in route.models:
                if model_name not in known:
                    raise ValueError(f"gateway.routes.{route_name}: no model named {model_name!r}")
        if self.default_model is not None and self.default_model not in known | set(self.routes):
            raise ValueError(f"gateway.default_model: no model or route named {self.default_model!r}")
        return self


class EmbeddingSettings(BaseModel):
    provider: Literal["onnx", "hash"] = "onnx"
    model_path: Path | None = None
    tokenizer_path: Path | None = None
    dimensions: int | None = Field(None, ge=8, le=4096)
    batch_size: int = Field(32, ge=1, le=512)
    threads: int = Field(1, ge=1)


class KnowledgeSettings(BaseModel):
    chunk_tokens: int = Field(200, ge=32, le=2048)
    chunk_overlap: int = Field(32, ge=0, le=512)
    top_k: int = Field(5, ge=1, le=50)
    candidates: int = Field(30, ge=1, le=500)
    rrf_k: int = Field(60, ge=1)
    demo_collection: bool = True
    # auto: pgvector when the database is PostgreSQL, the embedded HNSW index otherwise
    vector_backend: Literal["auto", "hnsw", "pgvector"] = "auto"
    hnsw_m: int = Field(16, ge=4, le=128)
    hnsw_ef_construction: int = Field(200, ge=16)
    hnsw_ef_search: int = Field(64, ge=10)
    reconcile_interval_s: float = Field(2.0, gt=0)
    index_save_interval_s: float = Field(30.0, ge=0)
    min_relevance: float = Field(0.25, ge=-1.0, le=1.0)

    @model_validator(mode="after")
    def _overlap_below_chunk(self) -> KnowledgeSettings:
        if self.chunk_overlap > self.chunk_tokens // 2:
            raise ValueError("knowledge.chunk_overlap must be at most half of knowledge.chunk_tokens")
        return self


class LimitSettings(BaseModel):
    max_message_chars: int = Field(8000, ge=1)
    max_request_bytes: int = Field(1_000_000, ge=1024)
    max_upload_bytes: int = Field(10_000_000, ge=1024)
    max_files_per_upload: int = Field(20, ge=1)
    max_search_limit: int = Field(50, ge=1)
    # One WebSocket message (``/ws``), in UTF-8 bytes; 16 times this closes the socket (1009).
    max_ws_message_bytes: int = Field(65_536, ge=1024)


RoleName = Literal["owner", "admin", "member", "viewer"]
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
    role_map: dict[str, RoleName] = {}  # IdP role name -> Atrium role
    default_role: RoleName = "member"
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


class RateLimitSettings(BaseModel):
    """Requests and model tokens per minute per API key, user and organisation (``None``: no limit at that
    scope; a key's own limits, set on the key, replace the ``key_*`` defaults). In process by default; in
    Redis, shared by every replica, when ``redis_url`` is set. See docs/limits-and-budgets.md."""

    enabled: bool = True
    strategy: Literal["sliding_window", "moving_window", "fixed_window"] = "sliding_window"
    key_requests_per_minute: int | None = Field(600, ge=1)
    user_requests_per_minute: int | None = Field(600, ge=1)
    org_requests_per_minute: int | None = Field(6000, ge=1)
    key_tokens_per_minute: int | None = Field(None, ge=1)
    user_tokens_per_minute: int | None = Field(None, ge=1)
    org_tokens_per_minute: int | None = Field(None, ge=1)
    ws_messages_per_minute: int | None = Field(120, ge=1)  # per WebSocket caller (key, else user)
    # When the limits storage (Redis) fails: admit (True, logged and counted in
    # atrium_limits_storage_errors_total) or refuse with 503 (False).
    fail_open: bool = True
    storage_timeout_s: float = Field(0.5, gt=0)  # one Redis round trip, connecting included
    storage_retry_s: float = Field(5.0, ge=0)  # after a storage failure, skip the storage this long


class BudgetSettings(BaseModel):
    """Spending caps (the caps themselves live in the ``budgets`` table, set by admins); see
    docs/limits-and-budgets.md."""

    enabled: bool = True
    # A call's reservation is released by itself after this long if its process died before settling;
    # keep it above gateway.total_timeout_s (a live call never outlasts that).
    reservation_ttl_s: float = Field(900.0, ge=10)
    cache_ttl_s: float = Field(30.0, ge=0)  # how long budget definitions are trusted without a lookup
    # How long the edge check trusts what this process last saw a budget window spend (reservations always
    # check the database).
    spend_cache_ttl_s: float = Field(1.0, ge=0)
    # The offline prompt count (cl100k) times this when reserving: other vendors' tokenizers count more.
    prompt_margin: float = Field(1.25, ge=1.0, le=4.0)


PiiAction = Literal["redact", "route_local", "block", "allow"]
PiiKind = Literal["email", "phone", "card", "iban", "national_id", "ip", "secret"]
InjectionAction = Literal["off", "flag", "strip", "refuse"]
PII_KINDS: tuple[PiiKind, ...] = ("email", "phone", "card", "iban", "national_id", "ip", "secret")


class PiiPolicySettings(BaseModel):
    """Personal data and secrets in a prompt bound for a model that is not local: replace them with
    placeholders and restore them in the answer (``redact``), serve the call with local models only
    (``route_local``), refuse it (``block``) or let it through (``allow``)."""

    model_config = {"extra": "forbid"}

    action: PiiAction = "redact"
    types: list[PiiKind] = Field(default_factory=lambda: list(PII_KINDS))


class ModerationPolicySettings(BaseModel):
    model_config = {"extra": "forbid"}

    enabled: bool = True
    default_blocklist: bool = True  # the short built-in list (guard/moderation.py)
    blocklist: list[str] = Field(default_factory=list, max_length=500)  # whole words/phrases, any case
    patterns: list[str] = Field(default_factory=list, max_length=100)  # regular expressions (config only)
    provider: bool = True  # also ask guard.moderation_provider, when one is configured

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"guard moderation pattern {pattern!r} does not compile: {exc}") from None
        return value


class InjectionPolicySettings(BaseModel):
    """Prompt-injection heuristics: what to do with user input and with retrieved context that score at
    least ``threshold``."""

    model_config = {"extra": "forbid"}

    input: InjectionAction = "flag"
    context: InjectionAction = "strip"
    threshold: float = Field(0.5, gt=0, le=1)


class OutputPolicySettings(BaseModel):
    model_config = {"extra": "forbid"}

    # http(s) links and images in answers must point at one of these domains (or a subdomain); None: any.
    link_domains: list[str] | None = Field(None, max_length=200)


class GuardPolicySettings(BaseModel):
    """One tenant's guard policy. The ``guard`` section holds the defaults; ``guard.tenants.<org_id>``
    (configuration) and the ``org_policies`` table (``PUT /api/v1/admin/policy``) override them key by
    key."""

    model_config = {"extra": "forbid"}

    enabled: bool = True
    pii: PiiPolicySettings = PiiPolicySettings()
    moderation: ModerationPolicySettings = ModerationPolicySettings()
    injection: InjectionPolicySettings = InjectionPolicySettings()
    output: OutputPolicySettings = OutputPolicySettings()


class ModerationProviderSettings(BaseModel):
    """An OpenAI-format moderation endpoint: a ``gateway.providers`` entry (its URL and key), or a
    ``base_url`` with an ``api_key``."""

    model_config = {"extra": "forbid"}

    provider: str | None = None
    base_url: str | None = None
    api_key: SecretStr | None = None
    model: str = "omni-moderation-latest"
    timeout_s: float = Field(5.0, gt=0)
    fail_closed: bool = False  # endpoint unavailable: refuse the call (True) or let it through, logged

    @model_validator(mode="after")
    def _one_target(self) -> ModerationProviderSettings:
        if (self.provider is None) == (self.base_url is None):
            raise ValueError("guard.moderation_provider needs exactly one of provider, base_url")
        return self


class GuardSettings(GuardPolicySettings):
    """Guardrails: moderation, PII, prompt injection, output sanitising; see docs/guardrails.md. The
    policy fields are every tenant's defaults; ``enabled: false`` here removes the guard entirely."""

    moderation_provider: ModerationProviderSettings | None = None
    tenants: dict[str, dict[str, Any]] = {}  # by org id: partial policies, the shape of PUT /api/v1/admin/policy
    policy_cache_ttl_s: float = Field(30.0, ge=0)  # a replica sees another's policy change within this

    @model_validator(mode="after")
    def _tenant_policies_valid(self) -> GuardSettings:
        if not self.tenants:
            return self
        from atrium.guard.policy import merged_policy

        for org_id, override in self.tenants.items():
            try:
                merged_policy(self, override)
            except ValueError as exc:
                raise ValueError(f"guard.tenants.{org_id}: {exc}") from None
        return self


class DatabaseSettings(BaseModel):
    """Tenant isolation in PostgreSQL (see docs/tenancy.md). At start-up the application checks that its
    role is subject to Row-Level Security and that every tenant table has it: a warning by default,
    a refusal to start with ``require_rls``."""

    require_rls: bool = False


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    shutdown_grace_s: float = Field(30.0, ge=0)
    # One log line per HTTP request. Off by default: every model call is already in the usage table and
    # /metrics, and formatting a line per request costs about as much as the gateway's own work.
    access_log: bool = False
    # Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed: IP addresses or networks
    # ("10.0.0.0/8"), "*" for any peer. Empty: the client is the TCP peer, whatever the headers say (the
    # per-IP login throttle and the audit trail's IP depend on it).
    forwarded_allow_ips: Annotated[list[str], NoDecode] = []  # in the environment: comma-separated

    @field_validator("forwarded_allow_ips", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return [item.strip() for item in value.split(",") if item.strip()] if isinstance(value, str) else value

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for item in value:
            if item != "*":
                try:
                    ipaddress.ip_network(item)  # an address is a network of one
                except ValueError:
                    raise ValueError(f"server.forwarded_allow_ips: {item!r} is not an IP address, network "
                                     "(host bits zero) or '*'") from None
        return value


class Settings(BaseSettings):
    """Everything Atrium can be told. See docs/configuration.md."""

    model_config = SettingsConfigDict(
        env_prefix="ATRIUM_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    data_dir: Path = Path("./data")
    database_url: SecretStr | None = None
    # The owner role that runs migrations (PostgreSQL); unset: database_url runs them too.
    migration_database_url: SecretStr | None = None
    redis_url: SecretStr | None = None
    bootstrap_admin_key: SecretStr | None = None
    config: Path | None = None
    model_cache_dir: Path | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    server: ServerSettings = ServerSettings()
    auth: AuthSettings = AuthSettings()
    chat: ChatSettings = ChatSettings()
    embedding: EmbeddingSettings = EmbeddingSettings()
    knowledge: KnowledgeSettings = KnowledgeSettings()
    limits: LimitSettings = LimitSettings()
    gateway: GatewaySettings = GatewaySettings()
    rate_limits: RateLimitSettings = RateLimitSettings()
    budgets: BudgetSettings = BudgetSettings()
    guard: GuardSettings = GuardSettings()
    database: DatabaseSettings = DatabaseSettings()

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        # Resolved once here, so nothing later touches the filesystem to find it (e.g. on the event loop).
        return Path(os.path.abspath(value.expanduser()))

    @field_validator("bootstrap_admin_key")
    @classmethod
    def _admin_key_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value():
            return None  # an empty variable means "not set"
        if value is not None:
            raw = value.get_secret_value()
            if not raw.startswith("atr_") or len(raw) < 32:
                raise ValueError("ATRIUM_BOOTSTRAP_ADMIN_KEY must start with 'atr_' and be >= 32 characters")
        return value

    @model_validator(mode="after")
    def _reservations_outlive_calls(self) -> Settings:
        # A live call's budget reservation must not expire under it (it would be released while still held).
        if self.budgets.reservation_ttl_s <= self.gateway.total_timeout_s:
            raise ValueError("budgets.reservation_ttl_s must be longer than gateway.total_timeout_s")
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite+aiosqlite:///{self.data_dir / 'atrium.db'}"

    @property
    def resolved_migration_database_url(self) -> str:
        if self.migration_database_url is not None:
            return self.migration_database_url.get_secret_value()
        return self.resolved_database_url

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def uploads_dir(self) -> Path:
        """Where uploaded files wait for their ingestion job."""
        return self.data_dir / "uploads"

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def models_dir(self) -> Path:
        """Where assembled local model files are cached (``model_cache_dir``, else ``data_dir/models``)."""
        return self.model_cache_dir or self.data_dir / "models"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_path = _config_path(init_settings, env_settings)
        if config_path is not None:
            if not config_path.is_file():
                raise ValueError(f"config file not found: {config_path}")
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_path))
        sources.append(file_secret_settings)
        return tuple(sources)


def _config_path(*sources: PydanticBaseSettingsSource) -> Path | None:
    for source in sources:
        value = source().get("config")
        if value:
            return Path(value)
    return None


def masked_dump(settings: Settings) -> dict[str, Any]:
    """The settings as plain data for ``atrium config show``: every secret masked (pydantic renders
    ``SecretStr`` as ``**********``), and database/Redis URLs shown without their password."""
    data = settings.model_dump(mode="json")
    for name in ("database_url", "migration_database_url", "redis_url"):
        secret = getattr(settings, name)
        if secret is not None:
            data[name] = _url_without_password(secret.get_secret_value())
    return data


def _url_without_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "**********"


def unknown_env_vars(environ: Mapping[str, str]) -> list[str]:
    """``ATRIUM_*`` variables that name no setting (usually typos, which would otherwise be ignored)."""
    known = set(_env_names(Settings, "ATRIUM_"))
    return sorted(name for name in environ if name.upper().startswith("ATRIUM_") and name.upper() not in known)


def _env_names(model: type[BaseModel], prefix: str) -> list[str]:
    names = []
    for field_name, field in model.model_fields.items():
        name = f"{prefix}{field_name.upper()}"
        names.append(name)
        # ``Model | None`` (e.g. ``auth.external``) has nested variables too.
        union = typing.get_origin(field.annotation) in (typing.Union, types.UnionType)
        for option in typing.get_args(field.annotation) if union else (field.annotation,):
            if isinstance(option, type) and issubclass(option, BaseModel):
                names.extend(_env_names(option, name + "__"))
    return names
