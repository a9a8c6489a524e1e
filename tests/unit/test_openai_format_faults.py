"""OpenAIChatModel against a misbehaving upstream: every fault ends the stream with the right
``ErrorEvent`` (exactly one terminal event, never ``Done``), and no message leaks the API key."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from blockbuster import BlockBuster

from atrium.gateway.ports import ChatEvent, ChatMessage, ChatRequest, Done, ErrorEvent, Token, Usage
from atrium.gateway.providers.base import Provider
from atrium.gateway.providers.openai_format import OpenAIChatModel, approximate_prompt_tokens
from tests.openai_upstream import OpenAIUpstream

API_KEY = "sk-live-THIS-MUST-NEVER-LEAK-0123456789"
REQUEST = ChatRequest(messages=(ChatMessage("user", "Tell me about foxes and rivers."),), max_tokens=50)


@pytest.fixture(autouse=True)
def _no_blocking_calls(blockbuster: BlockBuster) -> Iterator[None]:
    yield


@pytest.fixture(scope="module")
async def upstream() -> AsyncIterator[OpenAIUpstream]:
    async with OpenAIUpstream() as server:
        yield server


@pytest.fixture(scope="module")
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0)) as http:
        yield http


def model_for(upstream: OpenAIUpstream, client: httpx.AsyncClient, mode: str, **kwargs: object) -> OpenAIChatModel:
    provider = Provider(name="acme", base_url=upstream.base_url, model=mode, api_key=API_KEY)
    return OpenAIChatModel(provider, client, name="acme-chat", **kwargs)  # type: ignore[arg-type]


async def run(model: OpenAIChatModel, request: ChatRequest = REQUEST) -> list[ChatEvent]:
    return [event async for event in model.stream(request)]


def error_of(events: list[ChatEvent]) -> ErrorEvent:
    """The stream's single terminal event, asserted to be an ``ErrorEvent`` with no ``Done`` anywhere."""
    assert not any(isinstance(event, Done) for event in events), events
    assert sum(isinstance(event, ErrorEvent) for event in events) == 1, events
    assert isinstance(events[-1], ErrorEvent), events
    assert API_KEY not in events[-1].message
    assert "THIS-MUST-NEVER-LEAK" not in events[-1].message
    return events[-1]


def tokens_of(events: list[ChatEvent]) -> list[str]:
    return [event.text for event in events if isinstance(event, Token)]


@pytest.mark.parametrize(
    ("mode", "code", "retryable"),
    [
        ("status-500", "upstream_error", True),
        ("status-502", "upstream_error", True),
        ("status-503", "model_unavailable", True),
        ("status-504", "model_timeout", True),
        ("status-429", "rate_limited", True),
        ("status-400", "upstream_error", False),
        ("status-401", "upstream_error", False),
        ("status-404", "model_unavailable", False),
    ],
)
async def test_http_errors_map_to_codes(
    upstream: OpenAIUpstream, client: httpx.AsyncClient, mode: str, code: str, retryable: bool
) -> None:
    error = error_of(await run(model_for(upstream, client, mode)))
    assert (error.code, error.retryable) == (code, retryable)
    assert "acme" in error.message
    assert upstream.base_url not in error.message


async def test_context_length_exceeded_keeps_its_code(upstream: OpenAIUpstream, client: httpx.AsyncClient) -> None:
    error = error_of(await run(model_for(upstream, client, "context-too-long")))
    assert (error.code, error.retryable) == ("context_length_exceeded", False)
    assert "maximum context length" in error.message


async def test_rate_limit_reports_retry_after(upstream: OpenAIUpstream, client: httpx.AsyncClient) -> None:
    error = error_of(await run(model_for(upstream, client, "status-429")))
    assert "retry after 7" in error.message


async def test_401_never_echoes_the_key(upstream: OpenAIUpstream, client: httpx.AsyncClient) -> None:
    error = error_of(await run(model_for(upstream, client, "status-401")))
    assert "401" in error.message
    headers, _ = upstream.requests[-1]
    assert headers["authorization"] == f"Bearer {API_KEY}"  # it was sent, just never shown


async def test_timeout_mid_stream(upstream: OpenAIUpstream, client: httpx.AsyncClient) -> None:
    model = model_for(upstream, client, "stall", timeout=httpx.Timeout(0.3))
    events = await run(model)
    error = error_of(events)
    assert (error.code, error.retryable) == ("model_timeout", True)
    assert len(tokens_of(events)) == 1


async def test_connection_refused(client: httpx.AsyncClient) -> None:
    provider = Provider(name="acme", base_url="http://127.0.0.1:9/v1", model="ok", api_key=API_KEY)
    error = error_of(await run(OpenAIChatModel(provider, client)))
    assert (error.code, error.retryable) == ("model_unavailable", True)


async def test_connection_reset_mid_stream(upstream: OpenAIUpstream, client: httpx.AsyncClient) -> None:
    events = await run(model_for(upstream, client, "reset"))
    error = error_of(events)
    assert (error.code, error.retryable) == ("upstream_error", True)
    assert len(tokens_of(events)) <= 2


@pytest.mark.parametrize("mode", ["cut-chunked", "cut-eof", "done-without-finish"])
async def test_stream_cut_without_a_proper_end(upstream: OpenAIUpstream, client: httpx.AsyncClient, mode: str) -> None:
    events = await run(model_for(upstream, client, mode))
    error = error_of(events)
    assert (error.code, error.retryable) == ("upstream_error", True)
    assert "incomplete" in error.message or "broke" in error.message


async def test_malformed_chunk(upstream: OpenAIUpstream, client: httpx.AsyncClient) -> None:
    events = await run(model_for(upstream, client, "malformed"))
    error = error_of(events)
    assert error.code == "upstream_error"
    assert "malformed" in error.message
    assert tokens_of(events) == ["The"]


async def test_error_payload_mid_stream(upstream: OpenAIUpstream, client: httpx.AsyncClient) -> None:
    events = await run(model_for(upstream, client, "error-payload"))
    error = error_of(events)
    assert (error.code, error.retryable) == ("upstream_error", True)
    assert "The server had an error" in error.message


async def test_finish_reason_then_clean_close_is_complete(upstream: OpenAIUpstream, client: httpx.AsyncClient) -> None:
    """The upstream said the generation finished; only the [DONE] marker is missing: not a cut stream."""
    events = await run(model_for(upstream, client, "finish-then-eof"))
    assert isinstance(events[-1], Done)
    assert not any(isinstance(event, ErrorEvent) for event in events)


async def test_non_streamed_json_answer_is_accepted(upstream: OpenAIUpstream, client: httpx.AsyncClient) -> None:
    events = await run(model_for(upstream, client, "json"))
    assert isinstance(events[-1], Done)
    assert "".join(tokens_of(events)).startswith("The quick brown fox")
    assert isinstance(events[-2], Usage)


async def test_request_body_asks_for_usage(upstream: OpenAIUpstream, client: httpx.AsyncClient) -> None:
    request = ChatRequest(messages=REQUEST.messages, max_tokens=5, temperature=0.0, stop=("\n",),
                          extra={"seed": 7, "model": "ignored", "stream": False})
    await run(model_for(upstream, client, "ok"), request)
    _, body = upstream.requests[-1]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["model"] == "ok"
    assert (body["max_tokens"], body["temperature"], body["stop"], body["seed"]) == (5, 0.0, ["\n"], 7)


async def test_usage_from_the_provider_is_passed_on(upstream: OpenAIUpstream, client: httpx.AsyncClient) -> None:
    events = await run(model_for(upstream, client, "ok"))
    usage = next(event for event in events if isinstance(event, Usage))
    assert usage.prompt_tokens == 6  # the upstream counts words: "Tell me about foxes and rivers."
    assert usage.completion_tokens == len(tokens_of(events))


async def test_usage_fallback_counts_deltas_and_estimates_the_prompt(
    upstream: OpenAIUpstream, client: httpx.AsyncClient
) -> None:
    events = await run(model_for(upstream, client, "no-usage"))
    usage = next(event for event in events if isinstance(event, Usage))
    assert usage.completion_tokens == len(tokens_of(events)) == 15
    assert usage.prompt_tokens == approximate_prompt_tokens(REQUEST)
    assert isinstance(events[-1], Done)


async def test_usage_fallback_uses_the_prompt_counter(upstream: OpenAIUpstream, client: httpx.AsyncClient) -> None:
    async def counter(request: ChatRequest) -> int:
        return 1234

    events = await run(model_for(upstream, client, "no-usage", prompt_token_counter=counter))
    usage = next(event for event in events if isinstance(event, Usage))
    assert usage.prompt_tokens == 1234


async def test_a_failing_prompt_counter_falls_back_to_the_estimate(
    upstream: OpenAIUpstream, client: httpx.AsyncClient
) -> None:
    async def counter(request: ChatRequest) -> int:
        raise RuntimeError("tokenizer down")

    events = await run(model_for(upstream, client, "no-usage", prompt_token_counter=counter))
    usage = next(event for event in events if isinstance(event, Usage))
    assert usage.prompt_tokens == approximate_prompt_tokens(REQUEST)
    assert isinstance(events[-1], Done)


async def test_max_tokens_length_finish(upstream: OpenAIUpstream, client: httpx.AsyncClient) -> None:
    request = ChatRequest(messages=REQUEST.messages, max_tokens=3)
    events = await run(model_for(upstream, client, "ok"), request)
    assert tokens_of(events) == ["The", " quick", " brown"]
    assert events[-1] == Done(model="acme-chat", finish_reason="length")


async def test_closed_model_refuses(upstream: OpenAIUpstream, client: httpx.AsyncClient) -> None:
    model = model_for(upstream, client, "ok")
    await model.aclose()
    assert await model.ready() is False
    assert error_of(await run(model)).code == "model_unavailable"


def test_provider_repr_and_redaction_hide_the_key() -> None:
    provider = Provider(name="acme", base_url="https://api.acme.test/v1", model="m", api_key=API_KEY,
                        headers={"X-Api-Key": "hdr-secret-value", "Accept": "application/json"})
    assert API_KEY not in repr(provider)
    text = provider.redact(f"bad key {API_KEY}, header hdr-secret-value, other sk-abcdef123456789, application/json")
    assert API_KEY not in text and "hdr-secret-value" not in text and "sk-abcdef123456789" not in text
    assert "application/json" in text
