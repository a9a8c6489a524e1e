"""Nested settings: defaults < config file (``ATRIUM_CONFIG``, YAML) < ``ATRIUM_`` environment variables.

Nested fields use ``__`` in the environment: ``ATRIUM_CHAT__PROVIDER=fake``. Settings are built and validated
in ``create_app`` (or the CLI), never at import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
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


class AuthSettings(BaseModel):
    allow_anonymous: bool = False
    # How long a verified API key is trusted without another database lookup.
    key_cache_ttl_s: float = Field(10.0, ge=0)


class RateLimitSettings(BaseModel):
    """Requests per minute per API key, user and organisation (``None``: no limit at that scope). In
    process by default; in Redis, shared by every replica, when ``redis_url`` is set."""

    enabled: bool = True
    strategy: Literal["sliding_window", "moving_window", "fixed_window"] = "sliding_window"
    key_requests_per_minute: int | None = Field(600, ge=1)
    user_requests_per_minute: int | None = Field(600, ge=1)
    org_requests_per_minute: int | None = Field(6000, ge=1)


class BudgetSettings(BaseModel):
    """Spending caps (the caps themselves live in the ``budgets`` table, set by admins); see
    docs/limits-and-budgets.md."""

    enabled: bool = True


class GuardSettings(BaseModel):
    """Guardrails: moderation, PII, prompt injection, output sanitising; see docs/guardrails.md. Per-org
    overrides live in the ``org_policies`` table."""

    enabled: bool = True


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    shutdown_grace_s: float = Field(30.0, ge=0)
    # One log line per HTTP request. Off by default: every model call is already in the usage table and
    # /metrics, and formatting a line per request costs about as much as the gateway's own work.
    access_log: bool = False


class Settings(BaseSettings):
    """Everything Atrium can be told. See docs/configuration.md."""

    model_config = SettingsConfigDict(
        env_prefix="ATRIUM_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    data_dir: Path = Path("./data")
    database_url: SecretStr | None = None
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

    @property
    def resolved_database_url(self) -> str:
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return f"sqlite+aiosqlite:///{self.data_dir / 'atrium.db'}"

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
    for name in ("database_url", "redis_url"):
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
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names.extend(_env_names(annotation, name + "__"))
    return names
