"""The gateway's settings: the ``gateway`` section (providers, the model catalogue, routes, retries, the
circuit breaker, the response cache, per-tenant model policies) and the ``chat`` section (how answers are
generated, and the bundled local model's process). Composed into ``Settings`` by ``atrium.settings``, which
calls :func:`fold_legacy_chat` to turn an old config's ``chat.provider``/``chat.openai`` into
``gateway.providers``/``gateway.models`` and :func:`implied_catalogue` to fill in the embedded default."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, PrivateAttr, SecretStr, ValidationError, model_validator
from pydantic_core import PydanticCustomError

LocalModelName = Literal["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"]


class ChatSettings(BaseModel):
    """How answers are generated (``max_tokens``, ``temperature``, ``request_timeout_s``) and how the bundled
    local model's llama.cpp process runs (every ``local`` provider). Which model answers is ``gateway.*``'s."""

    local_model: LocalModelName = "qwen2.5-coder-1.5b"
    n_ctx: int = Field(4096, ge=512, le=32768)
    n_threads: int = Field(1, ge=1)
    n_threads_batch: int = Field(2, ge=1)
    max_tokens: int = Field(384, ge=1, le=4096)
    temperature: float = Field(0.1, ge=0.0, le=2.0)
    startup_timeout_s: float = Field(180.0, gt=0)
    request_timeout_s: float = Field(300.0, gt=0)


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
    """The model catalogue, routing and resilience. With no ``models`` configured, Atrium implies one (see
    :func:`implied_catalogue`): the bundled local model, or the model an old config's ``chat.provider``
    named."""

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
    # Upstream connections this process holds at most (every provider together); a call beyond them waits
    # for one, within attempt_timeout_s. Each open stream holds one for its whole length.
    max_connections: int = Field(4096, ge=1, le=65536)
    _implied_models: frozenset[str] = PrivateAttr(frozenset())

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

    def without_implied_models(self) -> GatewaySettings:
        """These settings less the models Atrium implied (an injected chat model stands in for them)."""
        if not self._implied_models:
            return self
        models = {name: m for name, m in self.models.items() if name not in self._implied_models}
        return self.model_copy(update={"models": models})


# Old configs named the one chat model in the ``chat`` section; these keys now live under ``gateway``.
LEGACY_CHAT_KEYS = ("provider", "openai", "fake_token_delay_s")
# Which legacy keys each old provider used (the others were ignored, as they are now).
_MIGRATED_KEYS = {"local": {"provider"}, "openai": {"provider", "openai"}, "fake": {"provider", "fake_token_delay_s"}}
_LEGACY_PROVIDERS = tuple(_MIGRATED_KEYS)
_NEW_KEYS = "gateway.providers and gateway.models (see docs/configuration.md, 'Migrating old configs')"


class LegacyChat(BaseModel):
    """What an old config's ``chat.provider``/``chat.openai``/``chat.fake_token_delay_s`` said."""

    model_config = {"extra": "forbid"}

    provider: Literal["local", "fake", "openai"] | None = None
    base_url: str = "https://api.openai.com/v1"
    api_key: SecretStr | None = None
    model: str = "gpt-4o-mini"
    fake_token_delay_s: float = Field(0.0, ge=0)
    given: tuple[str, ...] = ()  # the legacy keys the config set


class DeprecatedSettingWarning(FutureWarning):
    """An old setting was migrated or ignored; the message names the keys to use instead."""


def fold_legacy_chat(data: Any) -> tuple[Any, LegacyChat]:
    """``data`` (the raw settings) without the legacy ``chat`` keys, and what they said. A value that
    cannot be migrated (an unknown provider, a malformed ``chat.openai``) is refused, naming the new keys;
    the error shows no value that could be a secret."""
    chat = data.get("chat") if isinstance(data, Mapping) else None
    if not isinstance(chat, Mapping) or not any(key in chat for key in LEGACY_CHAT_KEYS):
        return data, LegacyChat()
    provider, openai = chat.get("provider"), chat.get("openai", {})
    if provider is not None and provider not in _LEGACY_PROVIDERS:
        raise _refused(("chat", "provider"), str(provider), "not supported any more, cannot be migrated")
    if not isinstance(openai, Mapping) or set(openai) - {"base_url", "api_key", "model"}:
        raise _refused(("chat", "openai"), sorted(openai) if isinstance(openai, Mapping) else type(openai).__name__,
                       "cannot be migrated (only base_url, api_key and model are known)")
    given = tuple(key for key in LEGACY_CHAT_KEYS if key in chat)
    try:
        legacy = LegacyChat.model_validate({"provider": provider, **openai, "given": given,
                                            "fake_token_delay_s": chat.get("fake_token_delay_s", 0.0)})
    except ValidationError as exc:
        error = exc.errors(include_input=False)[0]
        where = ("chat", "openai", *error["loc"]) if error["loc"][0] in openai else ("chat", *error["loc"])
        raise _refused(where, "(hidden)", error["msg"]) from None
    rest = {key: value for key, value in chat.items() if key not in LEGACY_CHAT_KEYS}
    return {**data, "chat": rest}, legacy


def _refused(loc: tuple[str | int, ...], shown: object, reason: str) -> ValidationError:
    message = f"{reason}: declare the model in {_NEW_KEYS}"
    return ValidationError.from_exception_data(
        "Settings", [{"type": PydanticCustomError("legacy_setting", message), "loc": loc, "input": shown}])


def implied_catalogue(gateway: GatewaySettings, chat: ChatSettings,
                      legacy: LegacyChat) -> tuple[GatewaySettings, list[str]]:
    """``gateway`` as configured when it has models; otherwise with the one model Atrium implies: what an
    old ``chat.provider`` named, else the bundled local model (the embedded default). Also the deprecation
    notes to show (they name keys, never values, so no secret reaches them)."""
    if gateway.models:
        return gateway, _legacy_notes(legacy.given, (), "")
    provider: ProviderSettings
    kind = legacy.provider or "local"
    if kind == "openai":
        provider = ProviderSettings(kind="openai", base_url=legacy.base_url, api_key=legacy.api_key)
        name, model = legacy.model, ModelSettings(provider="openai", model=legacy.model)
    elif kind == "fake":
        provider = ProviderSettings(kind="fake", fake_token_delay_s=legacy.fake_token_delay_s)
        name, model = "fake", ModelSettings(provider="fake", model="fake")
    else:
        provider = ProviderSettings(kind="local")
        name = chat.local_model
        model = ModelSettings(provider="local", model=chat.local_model, aliases=["local"],
                              context_window=chat.n_ctx, max_output_tokens=chat.max_tokens)
    implied = gateway.model_copy(update={"providers": {**gateway.providers, kind: provider},
                                         "models": {name: model}})
    implied._implied_models = frozenset({name})
    migrated = tuple(key for key in legacy.given if key in _MIGRATED_KEYS[kind])
    return implied, _legacy_notes(legacy.given, migrated, f"gateway.providers.{kind} and gateway.models.{name}")


def _legacy_notes(given: tuple[str, ...], migrated: tuple[str, ...], target: str) -> list[str]:
    notes = []
    if migrated:
        notes.append(f"{_keys(migrated)} deprecated: migrated to {target}; declare them there instead "
                     "(see docs/configuration.md, 'Migrating old configs')")
    ignored = tuple(key for key in given if key not in migrated)
    if ignored:
        notes.append(f"{_keys(ignored)} ignored: the model is chosen by gateway.providers and gateway.models "
                     "(remove it; see docs/configuration.md, 'Migrating old configs')")
    return notes


def _keys(keys: tuple[str, ...]) -> str:
    return ", ".join(f"chat.{key}" for key in keys)
