"""The ChatModel contract, run over every adapter.

Adapters: ``FakeChatModel``; ``OpenAIChatModel`` (configured for OpenAI and for Azure OpenAI) and
``AnthropicChatModel`` against a real HTTP upstream on 127.0.0.1 (``tests.fault_upstream``);
``LocalChatModel`` on the real Qwen2.5-Coder-0.5B through a managed llama.cpp server (integration).
Contract: tokens, then at most one ``Usage``, then exactly one terminal event (``Done`` here, whose
``model`` is the adapter's ``name`` and ``provider`` is set); ``max_tokens`` respected; concurrent and
abandoned streams do not disturb each other; ``ready()`` is true; no blocking call on the event loop.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from blockbuster import BlockBuster

from atrium.errors import ModelUnavailable
from atrium.gateway.http_client import upstream_http_client
from atrium.gateway.local_models import assemble_model
from atrium.gateway.ports import ChatEvent, ChatMessage, ChatModel, ChatRequest, Done, ErrorEvent, Token, Usage
from atrium.gateway.providers.anthropic_format import AnthropicChatModel
from atrium.gateway.providers.base import Provider
from atrium.gateway.providers.fake import FakeChatModel
from atrium.gateway.providers.llama_server import LlamaServerConfig, ManagedLlamaServer
from atrium.gateway.providers.local_llama import LocalChatModel
from atrium.gateway.providers.openai_format import OpenAIChatModel
from atrium.gateway.providers.registry import build_provider
from atrium.settings import ProviderSettings
from tests.fault_upstream import FaultUpstream

LOCAL_MODEL = "qwen2.5-coder-0.5b"

SOURCES = (
    "[1] Atrium keeps provider API keys on the server and never sends them to browsers. "
    "It streams answers over SSE.\n"
    "[2] Documents are chunked and embedded on the CPU."
)


def grounded(question: str = "Where are API keys kept?", max_tokens: int = 24) -> ChatRequest:
    return ChatRequest(
        messages=(
            ChatMessage("system", "Answer only from the numbered sources and cite them like [1]."),
            ChatMessage("user", f"Sources:\n{SOURCES}\n\nQuestion: {question}"),
        ),
        max_tokens=max_tokens,
        temperature=0.0,
    )


async def collect(model: ChatModel, request: ChatRequest) -> list[ChatEvent]:
    return [event async for event in model.stream(request)]


def assert_well_formed(events: list[ChatEvent], model: ChatModel) -> tuple[str, Usage | None, Done]:
    """tokens* usage? done — and nothing after the terminal event."""
    kinds = [event.type for event in events]
    assert kinds.count("done") + kinds.count("error") == 1, kinds
    terminal = events[-1]
    assert isinstance(terminal, Done), terminal
    assert terminal.model == model.name
    assert terminal.provider, "Done says which provider served"
    tokens = [event for event in events if isinstance(event, Token)]
    usages = [event for event in events if isinstance(event, Usage)]
    assert len(usages) <= 1
    assert kinds == ["token"] * len(tokens) + ["usage"] * len(usages) + ["done"], kinds
    return "".join(token.text for token in tokens), (usages[0] if usages else None), terminal


@pytest.fixture(autouse=True)
def _no_blocking_calls(blockbuster: BlockBuster) -> Iterator[None]:
    yield


@pytest.fixture(scope="module")
async def upstream() -> AsyncIterator[FaultUpstream]:
    async with FaultUpstream(token_delay=0.002) as server:
        yield server


@pytest.fixture(scope="module")
async def http_client() -> AsyncIterator[httpx.AsyncClient]:
    async with upstream_http_client(httpx.Timeout(30.0, connect=5.0)) as client:
        yield client


@pytest.fixture(scope="module")
def local_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 0.5B GGUF assembled into a session-wide cache (other modules reuse it); skip if not installed."""
    if importlib.util.find_spec("llama_cpp") is None:  # not imported: llama.cpp never loads in this process
        pytest.skip("llama-cpp-python is not installed (extra `local`)")
    try:
        return assemble_model(LOCAL_MODEL, tmp_path_factory.getbasetemp() / "model-cache")
    except ModelUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
async def local_model(local_model_path: Path) -> AsyncIterator[LocalChatModel]:
    """The real 0.5B model behind a managed llama.cpp server, started once for this module."""
    config = LlamaServerConfig(model=LOCAL_MODEL, cache_dir=local_model_path.parent,
                               log_dir=local_model_path.parent.parent / "logs", model_path=local_model_path,
                               n_ctx=2048)
    model = LocalChatModel(ManagedLlamaServer(config), request_timeout_s=120.0)
    await model.start()
    try:
        yield model
    finally:
        await model.aclose()


@pytest.fixture(params=["fake", "openai", "azure", "anthropic", pytest.param("local", marks=pytest.mark.integration)])
def chat_model(request: pytest.FixtureRequest) -> ChatModel:
    if request.param == "fake":
        return FakeChatModel(name="fake-model", token_delay=0.002)
    if request.param in ("openai", "azure", "anthropic"):
        upstream: FaultUpstream = request.getfixturevalue("upstream")
        client: httpx.AsyncClient = request.getfixturevalue("http_client")
        if request.param == "openai":
            provider = Provider(name="test upstream", base_url=upstream.base_url, model="ok",
                                api_key="sk-test-0123456789")
            return OpenAIChatModel(provider, client, name="upstream-model")
        settings = ProviderSettings.model_validate(
            {"kind": request.param, "base_url": upstream.root_url, "api_key": "sk-test-0123456789"}
        )
        provider = build_provider(f"test {request.param}", settings, "ok", {})
        if request.param == "azure":
            return OpenAIChatModel(provider, client, name="azure-model")
        return AnthropicChatModel(provider, client, name="anthropic-model")
    model: LocalChatModel = request.getfixturevalue("local_model")
    return model


async def test_stream_is_tokens_then_usage_then_one_done(chat_model: ChatModel) -> None:
    text, usage, _ = assert_well_formed(await collect(chat_model, grounded()), chat_model)
    assert text.strip()
    if usage is not None:
        assert usage.prompt_tokens > 0
        assert usage.completion_tokens >= 1
        assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_usage_counts_the_streamed_tokens(chat_model: ChatModel) -> None:
    events = await collect(chat_model, grounded())
    assert_well_formed(events, chat_model)
    usage = next((event for event in events if isinstance(event, Usage)), None)
    assert usage is not None, "every Atrium adapter reports usage"
    assert usage.completion_tokens == sum(isinstance(event, Token) for event in events)


async def test_max_tokens_is_respected(chat_model: ChatModel) -> None:
    request = grounded("List every number from 1 to 100, separated by spaces.", max_tokens=4)
    events = await collect(chat_model, request)
    _, usage, done = assert_well_formed(events, chat_model)
    assert sum(isinstance(event, Token) for event in events) <= 4
    if usage is not None:
        assert usage.completion_tokens <= 4
    assert done.finish_reason == "length"


async def test_concurrent_streams_all_complete(chat_model: ChatModel) -> None:
    results = await asyncio.gather(*(collect(chat_model, grounded(max_tokens=12)) for _ in range(3)))
    texts = {assert_well_formed(events, chat_model)[0] for events in results}
    assert len(texts) == 1, "temperature 0: the same prompt gives the same answer"


async def test_an_abandoned_stream_does_not_disturb_the_next(chat_model: ChatModel) -> None:
    stream = chat_model.stream(grounded(max_tokens=64))
    first = await anext(stream)
    assert isinstance(first, Token)
    await stream.aclose()  # type: ignore[attr-defined]
    assert_well_formed(await collect(chat_model, grounded(max_tokens=8)), chat_model)


async def test_ready(chat_model: ChatModel) -> None:
    assert await chat_model.ready() is True


async def test_is_a_chat_model(chat_model: ChatModel) -> None:
    assert isinstance(chat_model, ChatModel)
    assert not any(isinstance(event, ErrorEvent) for event in await collect(chat_model, grounded(max_tokens=4)))
