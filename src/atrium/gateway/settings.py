"""The gateway's settings: the ``gateway`` section (providers, the model catalogue, routes, retries, the
circuit breaker, the response cache, per-tenant model policies) and the legacy ``chat`` section (one model
named by ``chat.provider``, the catalogue when ``gateway.models`` is empty). Composed into ``Settings`` by
``atrium.settings``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator

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
