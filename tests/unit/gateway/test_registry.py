"""The provider registry: default URLs, key resolution (never showing the key), and which adapter each
provider kind builds; the adapters it builds are exercised against the fault upstream."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from atrium.gateway.ports import ChatMessage, ChatModel, ChatRequest, Done, Embedder, ErrorEvent, Token
from atrium.gateway.providers.anthropic_format import AnthropicChatModel
from atrium.gateway.providers.fake import NO_ANSWER, FakeChatModel
from atrium.gateway.providers.openai_embeddings import OpenAIEmbeddings
from atrium.gateway.providers.openai_format import OpenAIChatModel
from atrium.gateway.providers.registry import (
    DEFAULT_BASE_URLS,
    build_chat_adapter,
    build_embedding_adapter,
    build_provider,
    resolve_api_key,
)
from atrium.settings import ModelSettings, ProviderSettings
from tests.fault_upstream import FaultUpstream

SECRET = "sk-registry-SECRET-0123456789"
REQUEST = ChatRequest(messages=(ChatMessage("user", "Hello there."),), max_tokens=8)


def provider(**values: Any) -> ProviderSettings:
    return ProviderSettings.model_validate(values)


def chat(model: str = "m", **values: Any) -> ModelSettings:
    return ModelSettings.model_validate({"provider": "p", "model": model, **values})


def embedding(model: str = "e", **values: Any) -> ModelSettings:
    return ModelSettings.model_validate({"provider": "p", "model": model, "kind": "embedding", **values})


async def collect(model: ChatModel) -> list[Any]:
    return [event async for event in model.stream(REQUEST)]


def test_default_base_urls() -> None:
    assert DEFAULT_BASE_URLS == {
        "openai": "https://api.openai.com/v1", "groq": "https://api.groq.com/openai/v1",
        "anthropic": "https://api.anthropic.com", "ollama": "http://127.0.0.1:11434/v1",
        "vllm": "http://127.0.0.1:8000/v1", "llamacpp": "http://127.0.0.1:8080/v1",
    }  # fmt: skip


# -- keys ----------------------------------------------------------------------------------------------------


def test_key_from_settings_env_or_file(tmp_path: Path) -> None:
    assert resolve_api_key(provider(kind="openai", api_key=SECRET), {}) == SECRET
    assert resolve_api_key(provider(kind="openai", api_key_env="MY_KEY"), {"MY_KEY": SECRET}) == SECRET
    key_file = tmp_path / "key"
    key_file.write_text(f"  {SECRET}\n")
    assert resolve_api_key(provider(kind="openai", api_key_file=key_file), {}) == SECRET
    assert resolve_api_key(provider(kind="vllm"), {"MY_KEY": SECRET}) is None
    # the explicit key wins over the others
    both = provider(kind="openai", api_key="direct", api_key_env="MY_KEY")
    assert resolve_api_key(both, {"MY_KEY": SECRET}) == "direct"


@pytest.mark.parametrize("setting", ["env", "empty-env", "file", "empty-file"])
def test_a_missing_key_source_names_the_provider_never_a_key(tmp_path: Path, setting: str) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    values = {
        "env": {"api_key_env": "ABSENT"},
        "empty-env": {"api_key_env": "BLANK"},
        "file": {"api_key_file": tmp_path / "nope"},
        "empty-file": {"api_key_file": empty},
    }[setting]
    with pytest.raises(ValueError) as raised:
        build_provider("main-openai", provider(kind="openai", **values), "gpt", {"BLANK": "  ", "OTHER": SECRET})
    message = str(raised.value)
    assert "main-openai" in message and SECRET not in message
    assert ("api_key_env" if "env" in setting else "api_key_file") in message


# -- providers --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["azure", "tgi"])
def test_kinds_without_a_default_url_need_base_url(kind: str) -> None:
    with pytest.raises(ValueError, match=r"gateway\.providers\.edge\.base_url"):
        build_provider("edge", provider(kind=kind, api_key=SECRET), "m", {})


def test_azure_provider_layout() -> None:
    built = build_provider("az", provider(kind="azure", base_url="https://r.openai.azure.com", api_key=SECRET),
                           "gpt4o-deploy", {})
    assert built.url("chat/completions") == (
        "https://r.openai.azure.com/openai/deployments/gpt4o-deploy/chat/completions?api-version=2024-10-21"
    )
    assert built.url("embeddings").startswith("https://r.openai.azure.com/openai/deployments/gpt4o-deploy/embeddings?")
    assert built.request_headers() == {"api-key": SECRET}
    assert SECRET not in repr(built)


def test_configured_headers_and_url_are_kept() -> None:
    built = build_provider("g", provider(kind="groq", api_key=SECRET, headers={"X-Team": "blue"}), "llama", {})
    assert built.url("chat/completions") == "https://api.groq.com/openai/v1/chat/completions"
    assert built.request_headers() == {"X-Team": "blue", "Authorization": f"Bearer {SECRET}"}
    local = build_provider("v", provider(kind="vllm", base_url="http://gpu-box:9000/v1"), "qwen", {})
    assert local.url("chat/completions") == "http://gpu-box:9000/v1/chat/completions" and local.api_key is None


# -- chat adapters ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "adapter"), [
    ("openai", OpenAIChatModel), ("groq", OpenAIChatModel), ("vllm", OpenAIChatModel),
    ("ollama", OpenAIChatModel), ("llamacpp", OpenAIChatModel), ("tgi", OpenAIChatModel),
    ("azure", OpenAIChatModel), ("anthropic", AnthropicChatModel),
])  # fmt: skip
async def test_http_kinds_build_their_wire_format(
    upstream: FaultUpstream, client: httpx.AsyncClient, kind: str, adapter: type
) -> None:
    base = upstream.root_url if kind in ("azure", "anthropic") else upstream.base_url
    model = build_chat_adapter("catalogue-name", chat("ok"), "prov", provider(kind=kind, base_url=base, api_key=SECRET),
                               client, environ={})  # fmt: skip
    assert isinstance(model, adapter) and model.name == "catalogue-name"
    events = await collect(model)
    assert events[-1] == Done(model="catalogue-name", finish_reason="length", provider="prov")


async def test_anthropic_uses_the_catalogue_output_limit(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    settings = provider(kind="anthropic", base_url=upstream.root_url, api_key=SECRET)
    model = build_chat_adapter("c", chat("ok", max_output_tokens=77), "prov", settings, client, environ={})
    events = [event async for event in model.stream(ChatRequest(messages=REQUEST.messages, max_tokens=None))]
    assert isinstance(events[-1], Done)
    assert upstream.requests[-1].body["max_tokens"] == 77


async def test_the_key_comes_from_the_environment(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    model = build_chat_adapter("c", chat("ok"), "prov", provider(kind="openai", base_url=upstream.base_url,
                                                                 api_key_env="OPENAI_KEY"),
                               client, environ={"OPENAI_KEY": SECRET})  # fmt: skip
    await collect(model)
    assert upstream.requests[-1].headers["authorization"] == f"Bearer {SECRET}"


async def test_provider_timeouts_apply(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    model = build_chat_adapter("c", chat("stall"), "prov", provider(kind="openai", base_url=upstream.base_url,
                                                                    timeout_s=0.3), client, environ={})
    error = (await collect(model))[-1]
    assert isinstance(error, ErrorEvent) and error.code == "model_timeout"


async def test_fake_kind(client: httpx.AsyncClient) -> None:
    fixed = build_chat_adapter("demo", chat(), "f", provider(kind="fake", fake_answer="Fixed words here."), client,
                               environ={})  # fmt: skip
    assert isinstance(fixed, FakeChatModel) and fixed.name == "demo"
    assert "".join(e.text for e in await collect(fixed) if isinstance(e, Token)) == "Fixed words here."
    default = build_chat_adapter("demo", chat(), "f", provider(kind="fake"), client, environ={})
    assert "".join(e.text for e in await collect(default) if isinstance(e, Token)) == NO_ANSWER


async def test_local_kind_uses_the_factory(client: httpx.AsyncClient) -> None:
    local = FakeChatModel(name="local-model")
    assert build_chat_adapter("l", chat(), "here", provider(kind="local"), client, environ={},
                              local_factory=lambda _name: local) is local  # fmt: skip
    with pytest.raises(ValueError, match="local"):
        build_chat_adapter("l", chat(), "here", provider(kind="local"), client, environ={})


def test_an_embedding_model_is_not_a_chat_model(client: httpx.AsyncClient) -> None:
    with pytest.raises(ValueError, match="not a chat model"):
        build_chat_adapter("e", embedding(), "p", provider(kind="openai"), client, environ={})


# -- embedding adapters -----------------------------------------------------------------------------------


async def test_embedding_kinds(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    for kind in ("openai", "vllm", "ollama", "tgi", "azure"):
        base = upstream.root_url if kind == "azure" else upstream.base_url
        embedder = build_embedding_adapter("emb", embedding("ok", dimensions=64), "prov",
                                           provider(kind=kind, base_url=base, api_key=SECRET), client, environ={})
        assert isinstance(embedder, OpenAIEmbeddings) and isinstance(embedder, Embedder)
        assert (embedder.name, embedder.dimensions) == ("emb", 64)
        vectors = await embedder.embed(["hello world"])
        assert vectors.shape == (1, 64)
        assert "dimensions" not in upstream.requests[-1].body
    assert upstream.requests[-1].path == "/openai/deployments/ok/embeddings"


async def test_shortened_openai_embeddings_ask_for_their_width(
    upstream: FaultUpstream, client: httpx.AsyncClient
) -> None:
    embedder = build_embedding_adapter("small", embedding("text-embedding-3-small", dimensions=256), "prov",
                                       provider(kind="openai", base_url=upstream.base_url), client, environ={})
    vectors = await embedder.embed(["hello world"])
    assert vectors.shape == (1, 256) and upstream.requests[-1].body["dimensions"] == 256
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)


def test_embedding_dimensions_default_or_required(client: httpx.AsyncClient) -> None:
    ada = build_embedding_adapter("ada", embedding("text-embedding-ada-002"), "p", provider(kind="openai"), client,
                                  environ={})  # fmt: skip
    assert ada.dimensions == 1536
    with pytest.raises(ValueError, match=r"gateway\.models\.mine\.dimensions"):
        build_embedding_adapter("mine", embedding("nomic-embed-text"), "p", provider(kind="ollama"), client, environ={})
    with pytest.raises(ValueError, match="serves no embeddings"):
        build_embedding_adapter("e", embedding(dimensions=64), "p", provider(kind="anthropic"), client, environ={})
    with pytest.raises(ValueError, match="not an embedding model"):
        build_embedding_adapter("e", chat(), "p", provider(kind="openai"), client, environ={})
