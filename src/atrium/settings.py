"""Nested settings: defaults < config file (``ATRIUM_CONFIG``, YAML) < ``ATRIUM_`` environment variables.

Nested fields use ``__`` in the environment: ``ATRIUM_CHAT__PROVIDER=fake``. Settings are built and validated
in ``create_app`` (or the CLI), never at import time.

Each section is defined by its domain (``gateway/settings.py``, ``guard/settings.py``,
``knowledge/settings.py``, ``accounts/settings.py``, ``store/settings.py``, ``http/settings.py``); this
module composes them into ``Settings``, loads it and re-exports the section types.
"""

from __future__ import annotations

import os
import types
import typing
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ModelWrapValidatorHandler, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from atrium.accounts.settings import AuthSettings, ExternalClaimSettings, ExternalIdpSettings, JwtAlgorithm
from atrium.agents.settings import AgentSettings
from atrium.conversations.settings import StreamSettings
from atrium.gateway.settings import (
    LEGACY_CHAT_KEYS,
    BreakerSettings,
    CacheSettings,
    Capability,
    ChatSettings,
    DeprecatedSettingWarning,
    GatewaySettings,
    LocalModelName,
    ModelSettings,
    ProviderKind,
    ProviderSettings,
    RetrySettings,
    RouteSettings,
    RouteStrategy,
    TenantPolicySettings,
    fold_legacy_chat,
    implied_catalogue,
)
from atrium.guard.egress import EgressSettings
from atrium.guard.settings import (
    PII_KINDS,
    BudgetSettings,
    GuardPolicySettings,
    GuardSettings,
    InjectionAction,
    InjectionPolicySettings,
    ModerationPolicySettings,
    ModerationProviderSettings,
    OutputPolicySettings,
    PiiAction,
    PiiKind,
    PiiPolicySettings,
    RateLimitSettings,
)
from atrium.http.settings import LimitSettings, ServerSettings
from atrium.jobs.settings import JobSettings
from atrium.knowledge.settings import EmbeddingSettings, KnowledgeSettings
from atrium.notifications.settings import NotificationSettings
from atrium.realtime.settings import RealtimeSettings
from atrium.store.objects.settings import ObjectStoreSettings
from atrium.store.settings import DatabaseSettings
from atrium.webhooks.settings import WebhookSettings

__all__ = [
    "PII_KINDS", "AgentSettings", "AuthSettings", "BreakerSettings", "BudgetSettings", "CacheSettings", "Capability",
    "ChatSettings",
    "DatabaseSettings", "DeprecatedSettingWarning", "EgressSettings", "EmbeddingSettings", "ExternalClaimSettings",
    "ExternalIdpSettings", "GatewaySettings", "GuardPolicySettings", "GuardSettings", "InjectionAction",
    "InjectionPolicySettings", "JobSettings", "JwtAlgorithm", "KnowledgeSettings", "LimitSettings", "LocalModelName",
    "ModelSettings", "ModerationPolicySettings", "ModerationProviderSettings", "NotificationSettings",
    "ObjectStoreSettings", "OutputPolicySettings", "PiiAction", "PiiKind", "PiiPolicySettings", "ProviderKind",
    "ProviderSettings",
    "RateLimitSettings", "RealtimeSettings", "RetrySettings", "RouteSettings", "RouteStrategy", "ServerSettings",
    "Settings", "StreamSettings", "TenantPolicySettings", "WebhookSettings",
    "masked_dump",
    "unknown_env_vars",
]


class Settings(BaseSettings):
    """Everything Atrium can be told. See docs/configuration.md."""

    model_config = SettingsConfigDict(
        env_prefix="ATRIUM_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    data_dir: Path = Path("./data")  # everything the embedded profile writes (0700): see docs/operations.md
    # SQLAlchemy URL; unset: SQLite in data_dir. PostgreSQL: postgresql+asyncpg://, a role without BYPASSRLS.
    database_url: SecretStr | None = None
    # The owner role that runs migrations (PostgreSQL); unset: database_url runs them too.
    migration_database_url: SecretStr | None = None
    redis_url: SecretStr | None = None  # redis://host:6379/0; unset: in-process (one process only)
    # On a new data dir, the first admin API key (atr_..., >= 32 characters) instead of a generated one.
    bootstrap_admin_key: SecretStr | None = None
    config: Path | None = None  # a YAML file with the same structure; the environment overrides it
    model_cache_dir: Path | None = None  # where the assembled local model is kept; unset: data_dir/models
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
    streams: StreamSettings = StreamSettings()
    agents: AgentSettings = AgentSettings()
    realtime: RealtimeSettings = RealtimeSettings()
    notifications: NotificationSettings = NotificationSettings()
    jobs: JobSettings = JobSettings()
    egress: EgressSettings = EgressSettings()  # what fetches of user-given URLs may reach (guard/egress.py)
    object_store: ObjectStoreSettings = ObjectStoreSettings()  # where uploads wait for their job (store/objects/)
    webhooks: WebhookSettings = WebhookSettings()  # signed job-completion webhooks (atrium.webhooks)

    @model_validator(mode="wrap")
    @classmethod
    def _fold_legacy_chat(cls, data: Any, handler: ModelWrapValidatorHandler[Settings]) -> Settings:
        # Old configs chose the model with chat.provider/chat.openai: migrated to gateway.* here, once.
        data, legacy = fold_legacy_chat(data)
        settings = handler(data)
        settings.gateway, notes = implied_catalogue(settings.gateway, settings.chat, legacy)
        for note in notes:
            warnings.warn(note, DeprecatedSettingWarning, stacklevel=4)  # at the Settings() call
        return settings

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
        """Where uploaded files wait for their ingestion job (``object_store.backend=local``)."""
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
    # The legacy chat.* keys are still read (and migrated with a warning of their own).
    known |= {f"ATRIUM_CHAT__{key.upper()}" for key in LEGACY_CHAT_KEYS}
    known |= {f"ATRIUM_CHAT__OPENAI__{name}" for name in ("BASE_URL", "API_KEY", "MODEL")}
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
