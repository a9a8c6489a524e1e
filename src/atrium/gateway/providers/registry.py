"""From configuration to adapters: which wire format serves which provider kind, and how a provider
entry becomes a :class:`~atrium.gateway.providers.base.Provider` (URL, key, Azure's URL layout).

========== ================================ ==================================================
kind       chat adapter                     default base URL
========== ================================ ==================================================
openai     OpenAIChatModel                  https://api.openai.com/v1
azure      OpenAIChatModel (deployments)    none: the resource endpoint must be set
groq       OpenAIChatModel                  https://api.groq.com/openai/v1
tgi        OpenAIChatModel                  none: the endpoint must be set
vllm       OpenAIChatModel                  http://127.0.0.1:8000/v1
ollama     OpenAIChatModel                  http://127.0.0.1:11434/v1
llamacpp   OpenAIChatModel                  http://127.0.0.1:8080/v1
anthropic  AnthropicChatModel               https://api.anthropic.com
local      the managed llama.cpp model      (``local_factory``)
fake       FakeChatModel                    (in process)
========== ================================ ==================================================

Embeddings (``OpenAIEmbeddings``): openai, azure, vllm, ollama, tgi.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import httpx

from atrium.gateway.ports import ChatModel, ChatRequest, Embedder
from atrium.gateway.providers.anthropic_format import AnthropicChatModel
from atrium.gateway.providers.base import Provider
from atrium.gateway.providers.fake import FakeChatModel, grounded_answer
from atrium.gateway.providers.openai_embeddings import OpenAIEmbeddings
from atrium.gateway.providers.openai_format import OpenAIChatModel
from atrium.gateway.settings import ModelSettings, ProviderSettings

DEFAULT_BASE_URLS: Mapping[str, str] = MappingProxyType({
    "openai": "https://api.openai.com/v1",
    "groq": "https://api.groq.com/openai/v1",
    "anthropic": "https://api.anthropic.com",
    "ollama": "http://127.0.0.1:11434/v1",
    "vllm": "http://127.0.0.1:8000/v1",
    "llamacpp": "http://127.0.0.1:8080/v1",
})  # fmt: skip
AZURE_API_VERSION = "2024-10-21"

_AZURE_PATHS = MappingProxyType({
    "chat/completions": "openai/deployments/{model}/chat/completions",
    "embeddings": "openai/deployments/{model}/embeddings",
})  # fmt: skip
_HTTP_KINDS = frozenset({"openai", "azure", "groq", "tgi", "vllm", "ollama", "llamacpp", "anthropic"})
_EMBEDDING_KINDS = frozenset({"openai", "azure", "vllm", "ollama", "tgi"})
# OpenAI models that can shorten their vectors (the ``dimensions`` parameter), with their native width.
_SHORTENABLE = MappingProxyType({"text-embedding-3-small": 1536, "text-embedding-3-large": 3072})
_NATIVE_DIMENSIONS = MappingProxyType({**_SHORTENABLE, "text-embedding-ada-002": 1536})


def resolve_api_key(settings: ProviderSettings, environ: Mapping[str, str], *, name: str = "") -> str | None:
    """The provider's key: ``api_key``, else the environment variable ``api_key_env``, else the contents of
    ``api_key_file`` (stripped); ``None`` when none is configured. A variable or file that is configured but
    missing or empty raises ``ValueError`` naming the provider and the setting, never the key. Reads a
    file: call it at startup, not inside the event loop."""
    label = f"provider {name!r}" if name else f"the {settings.kind} provider"
    if settings.api_key is not None:
        return settings.api_key.get_secret_value()
    if settings.api_key_env:
        value = environ.get(settings.api_key_env, "").strip()
        if not value:
            raise ValueError(f"{label}: the environment variable {settings.api_key_env!r} (api_key_env) is not set.")
        return value
    if settings.api_key_file is not None:
        try:
            value = settings.api_key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ValueError(
                f"{label}: cannot read api_key_file {str(settings.api_key_file)!r} ({type(exc).__name__})."
            ) from None
        if not value:
            raise ValueError(f"{label}: api_key_file {str(settings.api_key_file)!r} is empty.")
        return value
    return None


def build_provider(
    name: str, settings: ProviderSettings, upstream_model: str, environ: Mapping[str, str]
) -> Provider:
    """The ``Provider`` of an HTTP provider entry; ``upstream_model`` is the model id (Azure: deployment)."""
    if settings.kind not in _HTTP_KINDS:
        raise ValueError(f"provider {name!r}: kind {settings.kind!r} is not reached over HTTP.")
    base_url = settings.base_url or DEFAULT_BASE_URLS.get(settings.kind)
    if not base_url:
        raise ValueError(
            f"provider {name!r} (kind {settings.kind}) has no default URL: set gateway.providers.{name}.base_url."
        )
    shape = _SHAPES.get(settings.kind, _no_shape)(settings)
    return Provider(name=name, base_url=base_url, model=upstream_model,
                    api_key=resolve_api_key(settings, environ, name=name), headers=dict(settings.headers),
                    api_version=settings.api_version, **shape)  # fmt: skip


def build_chat_adapter(model_name: str, model: ModelSettings, provider_name: str, provider: ProviderSettings,
                       client: httpx.AsyncClient, *, environ: Mapping[str, str],
                       local_factory: Callable[[str], ChatModel] | None = None) -> ChatModel:
    """The chat adapter of catalogue entry ``model_name`` (its ``name`` is ``model_name``, except for the
    local model, which is whatever ``local_factory`` builds)."""
    if model.kind != "chat":
        raise ValueError(f"gateway.models.{model_name} is an {model.kind} model, not a chat model.")
    build = _CHAT_ADAPTERS[provider.kind]
    return build(_Entry(model_name, model, provider_name, provider, client, environ, local_factory))


def build_embedding_adapter(model_name: str, model: ModelSettings, provider_name: str,
                            provider: ProviderSettings, client: httpx.AsyncClient, *,
                            environ: Mapping[str, str]) -> Embedder:
    """The embeddings adapter of catalogue entry ``model_name``. ``dimensions`` comes from the entry, or
    from the known width of OpenAI's models; a shorter width than a ``text-embedding-3-*`` model's native
    one is requested from the upstream."""
    if model.kind != "embedding":
        raise ValueError(f"gateway.models.{model_name} is a {model.kind} model, not an embedding model.")
    if provider.kind not in _EMBEDDING_KINDS:
        raise ValueError(f"gateway.models.{model_name}: provider {provider_name!r} (kind {provider.kind}) "
                         f"serves no embeddings; use one of {', '.join(sorted(_EMBEDDING_KINDS))}.")
    dimensions = model.dimensions or _NATIVE_DIMENSIONS.get(model.model)
    if dimensions is None:
        raise ValueError(f"gateway.models.{model_name}.dimensions must be set (the width of {model.model!r}).")
    native = _SHORTENABLE.get(model.model)
    return OpenAIEmbeddings(
        build_provider(provider_name, provider, model.model, environ), client, name=model_name,
        dimensions=dimensions, send_dimensions=native is not None and dimensions != native,
        timeout=_timeout(provider),
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Entry:
    model_name: str
    model: ModelSettings
    provider_name: str
    settings: ProviderSettings
    client: httpx.AsyncClient
    environ: Mapping[str, str]
    local_factory: Callable[[str], ChatModel] | None

    def provider(self) -> Provider:
        return build_provider(self.provider_name, self.settings, self.model.model, self.environ)


def _timeout(settings: ProviderSettings) -> httpx.Timeout:
    return httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s)


def _no_shape(settings: ProviderSettings) -> dict[str, Any]:
    return {}


def _azure_shape(settings: ProviderSettings) -> dict[str, Any]:
    """Azure OpenAI: the deployment in the path, ``api-version`` in the query, the key in ``api-key``."""
    return {"paths": _AZURE_PATHS, "query": {"api-version": settings.api_version or AZURE_API_VERSION},
            "auth": ("api-key", "")}  # fmt: skip


_SHAPES: Mapping[str, Callable[[ProviderSettings], dict[str, Any]]] = MappingProxyType({"azure": _azure_shape})


def _openai_chat(entry: _Entry) -> ChatModel:
    return OpenAIChatModel(entry.provider(), entry.client, name=entry.model_name, timeout=_timeout(entry.settings))


def _anthropic_chat(entry: _Entry) -> ChatModel:
    return AnthropicChatModel(entry.provider(), entry.client, name=entry.model_name,
                              timeout=_timeout(entry.settings), default_max_tokens=entry.model.max_output_tokens)


def _fake_chat(entry: _Entry) -> ChatModel:
    text = entry.settings.fake_answer
    answer: Callable[[ChatRequest], str] = grounded_answer if text is None else (lambda _request: text)
    return FakeChatModel(name=entry.model_name, answer=answer, token_delay=entry.settings.fake_token_delay_s,
                         provider=entry.provider_name)


def _local_chat(entry: _Entry) -> ChatModel:
    if entry.local_factory is None:
        raise ValueError(f"gateway.models.{entry.model_name}: provider {entry.provider_name!r} is the local model, "
                         "but no local model factory was given.")
    return entry.local_factory(entry.model_name)


_CHAT_ADAPTERS: Mapping[str, Callable[[_Entry], ChatModel]] = MappingProxyType({
    **dict.fromkeys(("openai", "azure", "groq", "tgi", "vllm", "ollama", "llamacpp"), _openai_chat),
    "anthropic": _anthropic_chat,
    "fake": _fake_chat,
    "local": _local_chat,
})  # fmt: skip
