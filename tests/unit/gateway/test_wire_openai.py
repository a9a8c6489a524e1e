"""OpenAIChatModel against the fault-injecting upstream: request translation (asserted on the JSON the
upstream received), tool-call streaming, and every fault ending the stream with the right ``ErrorEvent``
(exactly one terminal event, never ``Done``, with retry hints and who failed), never leaking the key.
Azure is the same adapter with another ``Provider``."""

from __future__ import annotations

import email.utils
from collections.abc import Iterator

import httpx
import pytest
from blockbuster import BlockBuster

from atrium.gateway.ports import (
    ChatEvent,
    ChatMessage,
    ChatRequest,
    Done,
    ErrorEvent,
    Token,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from atrium.gateway.providers.base import Provider, retry_after_seconds
from atrium.gateway.providers.openai_format import OpenAIChatModel, approximate_prompt_tokens
from atrium.gateway.providers.registry import build_provider
from atrium.settings import ProviderSettings
from tests.fault_upstream import TOOL_ARGUMENTS, FaultUpstream

API_KEY = "sk-live-THIS-MUST-NEVER-LEAK-0123456789"
REQUEST = ChatRequest(messages=(ChatMessage("user", "Tell me about foxes and rivers."),), max_tokens=50)
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.",
                                                 "parameters": {"type": "object",
                                                                "properties": {"city": {"type": "string"}}}}}
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}


@pytest.fixture(autouse=True)
def _no_blocking_calls(blockbuster: BlockBuster) -> Iterator[None]:
    yield


def model_for(upstream: FaultUpstream, client: httpx.AsyncClient, mode: str, **kwargs: object) -> OpenAIChatModel:
    provider = Provider(name="acme", base_url=upstream.base_url, model=mode, api_key=API_KEY)
    return OpenAIChatModel(provider, client, name="acme-chat", **kwargs)  # type: ignore[arg-type]


def azure_for(
    upstream: FaultUpstream, client: httpx.AsyncClient, deployment: str, **settings: object
) -> OpenAIChatModel:
    config = ProviderSettings.model_validate({"kind": "azure", "base_url": upstream.root_url, "api_key": API_KEY,
                                              **settings})
    return OpenAIChatModel(build_provider("azure-east", config, deployment, {}), client, name="azure-chat")


async def run(model: OpenAIChatModel, request: ChatRequest = REQUEST) -> list[ChatEvent]:
    return [event async for event in model.stream(request)]


def error_of(events: list[ChatEvent], model: str = "acme-chat", provider: str = "acme") -> ErrorEvent:
    """The stream's single terminal event, asserted to be an ``ErrorEvent`` with no ``Done`` anywhere."""
    assert not any(isinstance(event, Done) for event in events), events
    assert sum(isinstance(event, ErrorEvent) for event in events) == 1, events
    error = events[-1]
    assert isinstance(error, ErrorEvent), events
    assert API_KEY not in error.message
    assert "THIS-MUST-NEVER-LEAK" not in error.message
    assert (error.model, error.provider) == (model, provider)
    return error


def tokens_of(events: list[ChatEvent]) -> list[str]:
    return [event.text for event in events if isinstance(event, Token)]


def calls_of(events: list[ChatEvent]) -> dict[int, tuple[str | None, str | None, str]]:
    """Tool-call deltas reassembled: index -> (id, name, arguments)."""
    calls: dict[int, tuple[str | None, str | None, str]] = {}
    for event in events:
        if isinstance(event, ToolCallDelta):
            call_id, name, arguments = calls.get(event.index, (None, None, ""))
            calls[event.index] = (call_id or event.id, name or event.name, arguments + event.arguments)
    return calls


# -- faults ----------------------------------------------------------------------------------------


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
        ("context-too-long", "context_length_exceeded", False),
        ("quota", "rate_limited", False),
    ],
)
async def test_http_errors_map_to_codes(
    upstream: FaultUpstream, client: httpx.AsyncClient, mode: str, code: str, retryable: bool
) -> None:
    error = error_of(await run(model_for(upstream, client, mode)))
    assert (error.code, error.retryable) == (code, retryable)
    assert "acme" in error.message
    assert upstream.base_url not in error.message


async def test_context_length_exceeded_keeps_the_upstream_message(
    upstream: FaultUpstream, client: httpx.AsyncClient
) -> None:
    error = error_of(await run(model_for(upstream, client, "context-too-long")))
    assert "maximum context length" in error.message


@pytest.mark.parametrize(("mode", "low", "high"), [("status-429", 1.0, 1.0), ("rate-limited-ms", 1.5, 1.5),
                                                   ("rate-limited-date", 0.5, 3.5)])
async def test_rate_limit_reports_retry_after(
    upstream: FaultUpstream, client: httpx.AsyncClient, mode: str, low: float, high: float
) -> None:
    error = error_of(await run(model_for(upstream, client, mode)))
    assert (error.code, error.retryable) == ("rate_limited", True)
    assert error.retry_after is not None and low <= error.retry_after <= high
    assert "retry after" in error.message


async def test_an_exhausted_quota_is_not_worth_a_retry(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    error = error_of(await run(model_for(upstream, client, "quota")))
    assert (error.retryable, error.retry_after) == (False, None)


def test_retry_after_header_forms() -> None:
    now = 1_700_000_000.0
    assert retry_after_seconds({"Retry-After": "7"}) == 7.0
    assert retry_after_seconds({"retry-after-ms": "250", "Retry-After": "7"}) == 0.25
    assert retry_after_seconds({"Retry-After": email.utils.formatdate(now + 12, usegmt=True)}, now=now) == 12.0
    assert retry_after_seconds({"Retry-After": email.utils.formatdate(now - 12, usegmt=True)}, now=now) == 0.0
    assert retry_after_seconds({"Retry-After": "soon"}) is None
    assert retry_after_seconds({}) is None


async def test_401_never_echoes_the_key(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    error = error_of(await run(model_for(upstream, client, "status-401")))
    assert "401" in error.message
    assert upstream.requests[-1].headers["authorization"] == f"Bearer {API_KEY}"  # sent, never shown


async def test_timeout_mid_stream(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    model = model_for(upstream, client, "stall", timeout=httpx.Timeout(0.3))
    events = await run(model)
    error = error_of(events)
    assert (error.code, error.retryable) == ("model_timeout", True)
    assert len(tokens_of(events)) == 1


async def test_slow_headers(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    error = error_of(await run(model_for(upstream, client, "slow-1000", timeout=httpx.Timeout(0.2))))
    assert (error.code, error.retryable) == ("model_timeout", True)
    events = await run(model_for(upstream, client, "slow-100", timeout=httpx.Timeout(2.0)))
    assert isinstance(events[-1], Done)


async def test_connection_refused(client: httpx.AsyncClient) -> None:
    provider = Provider(name="acme", base_url="http://127.0.0.1:9/v1", model="ok", api_key=API_KEY)
    error = error_of(await run(OpenAIChatModel(provider, client, name="acme-chat")))
    assert (error.code, error.retryable) == ("model_unavailable", True)


async def test_connection_reset_mid_stream(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    events = await run(model_for(upstream, client, "reset"))
    error = error_of(events)
    assert (error.code, error.retryable) == ("upstream_error", True)
    assert len(tokens_of(events)) <= 2


@pytest.mark.parametrize("mode", ["cut-chunked", "cut-eof", "done-without-finish"])
async def test_stream_cut_without_a_proper_end(upstream: FaultUpstream, client: httpx.AsyncClient, mode: str) -> None:
    events = await run(model_for(upstream, client, mode))
    error = error_of(events)
    assert (error.code, error.retryable) == ("upstream_error", True)
    assert "incomplete" in error.message or "broke" in error.message


async def test_malformed_chunk(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    events = await run(model_for(upstream, client, "malformed"))
    error = error_of(events)
    assert (error.code, error.retryable) == ("upstream_error", True)
    assert "malformed" in error.message
    assert tokens_of(events) == ["The"]


async def test_error_payload_mid_stream(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    events = await run(model_for(upstream, client, "error-payload"))
    error = error_of(events)
    assert (error.code, error.retryable) == ("upstream_error", True)
    assert "The server had an error" in error.message


async def test_fail_first_n_then_answers(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    model = model_for(upstream, client, "fail-first-2")
    first, second = error_of(await run(model)), error_of(await run(model))
    assert (first.code, first.retryable, second.code) == ("model_unavailable", True, "model_unavailable")
    events = await run(model)
    assert isinstance(events[-1], Done) and "".join(tokens_of(events)).startswith("The quick")
    assert upstream.count("fail-first-2") == 3


async def test_random_faults_follow_the_seed(client: httpx.AsyncClient) -> None:
    async def outcomes(**faults: float) -> list[str]:
        async with FaultUpstream(seed=7, **faults) as server:  # type: ignore[arg-type]
            model = model_for(server, client, "ok")
            return [events[-1].code if isinstance(events[-1], ErrorEvent) else "done"
                    for events in [await run(model) for _ in range(12)]]

    assert set(await outcomes(fail_rate=1.0)) == {"model_unavailable"}
    assert set(await outcomes(cut_rate=1.0)) == {"upstream_error"}
    mixed = await outcomes(fail_rate=0.3, cut_rate=0.3)
    assert {"done", "model_unavailable", "upstream_error"} <= set(mixed)
    assert await outcomes(fail_rate=0.3, cut_rate=0.3) == mixed


async def test_closed_model_refuses(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    model = model_for(upstream, client, "ok")
    await model.aclose()
    assert await model.ready() is False
    assert error_of(await run(model)).code == "model_unavailable"


# -- answers -----------------------------------------------------------------------------------------


async def test_finish_reason_then_clean_close_is_complete(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    """The upstream said the generation finished; only the [DONE] marker is missing: not a cut stream."""
    events = await run(model_for(upstream, client, "finish-then-eof"))
    assert isinstance(events[-1], Done)
    assert not any(isinstance(event, ErrorEvent) for event in events)


async def test_non_streamed_json_answer_is_accepted(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    events = await run(model_for(upstream, client, "json"))
    assert isinstance(events[-1], Done)
    assert "".join(tokens_of(events)).startswith("The quick brown fox")
    assert isinstance(events[-2], Usage)


async def test_done_names_the_model_and_the_provider(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    events = await run(model_for(upstream, client, "ok"), ChatRequest(messages=REQUEST.messages, max_tokens=3))
    assert tokens_of(events) == ["The", " quick", " brown"]
    assert events[-1] == Done(model="acme-chat", finish_reason="length", provider="acme")


async def test_usage_from_the_provider_is_passed_on(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    events = await run(model_for(upstream, client, "ok"))
    usage = next(event for event in events if isinstance(event, Usage))
    assert usage.prompt_tokens == 6  # the upstream counts words: "Tell me about foxes and rivers."
    assert usage.completion_tokens == len(tokens_of(events))


async def test_usage_fallback_counts_deltas_and_estimates_the_prompt(
    upstream: FaultUpstream, client: httpx.AsyncClient
) -> None:
    events = await run(model_for(upstream, client, "no-usage"))
    usage = next(event for event in events if isinstance(event, Usage))
    assert usage.completion_tokens == len(tokens_of(events)) == 15
    assert usage.prompt_tokens == approximate_prompt_tokens(REQUEST)
    assert isinstance(events[-1], Done)


async def test_usage_fallback_uses_the_prompt_counter(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    async def counter(request: ChatRequest) -> int:
        return 1234

    events = await run(model_for(upstream, client, "no-usage", prompt_token_counter=counter))
    usage = next(event for event in events if isinstance(event, Usage))
    assert usage.prompt_tokens == 1234


async def test_a_failing_prompt_counter_falls_back_to_the_estimate(
    upstream: FaultUpstream, client: httpx.AsyncClient
) -> None:
    async def counter(request: ChatRequest) -> int:
        raise RuntimeError("tokenizer down")

    events = await run(model_for(upstream, client, "no-usage", prompt_token_counter=counter))
    usage = next(event for event in events if isinstance(event, Usage))
    assert usage.prompt_tokens == approximate_prompt_tokens(REQUEST)
    assert isinstance(events[-1], Done)


async def test_stop_sequences_end_the_answer(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    events = await run(model_for(upstream, client, "ok"), ChatRequest(messages=REQUEST.messages, stop=(" jumps",)))
    assert "".join(tokens_of(events)) == "The quick brown fox"
    assert isinstance(events[-1], Done) and events[-1].finish_reason == "stop"


# -- tool calls ----------------------------------------------------------------------------------------


async def test_streamed_tool_calls_become_deltas(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    request = ChatRequest(messages=REQUEST.messages, tools=(WEATHER_TOOL, TIME_TOOL), tool_choice="auto")
    events = await run(model_for(upstream, client, "tool-2"), request)
    assert tokens_of(events) == []
    deltas = [event for event in events if isinstance(event, ToolCallDelta)]
    assert deltas[0] == ToolCallDelta(index=0, id="call_1", name="get_weather", arguments="")
    assert all(d.id is None and d.name is None for d in deltas if d.arguments)  # later pieces: arguments only
    assert calls_of(events) == {0: ("call_1", "get_weather", TOOL_ARGUMENTS), 1: ("call_2", "get_time", TOOL_ARGUMENTS)}
    usage = next(event for event in events if isinstance(event, Usage))
    assert usage.completion_tokens == 6
    assert events[-1] == Done(model="acme-chat", finish_reason="tool_calls", provider="acme")


async def test_non_streamed_tool_calls(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    events = await run(model_for(upstream, client, "json-tool"), ChatRequest(messages=REQUEST.messages,
                                                                           tools=(WEATHER_TOOL,)))
    assert [e for e in events if isinstance(e, ToolCallDelta)] == [
        ToolCallDelta(index=0, id="call_1", name="get_weather", arguments=TOOL_ARGUMENTS)
    ]
    assert isinstance(events[-1], Done) and events[-1].finish_reason == "tool_calls"


async def test_request_translation(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    request = ChatRequest(
        messages=(
            ChatMessage("system", "Be brief."),
            ChatMessage("user", ({"type": "text", "text": "Weather where this was taken?"}, image)),
            ChatMessage("assistant", "", tool_calls=(ToolCall("call_9", "get_weather", '{"city": "Oslo"}'),)),
            ChatMessage("tool", "-3 C, snow", tool_call_id="call_9"),
        ),
        max_tokens=None, temperature=None, tools=(WEATHER_TOOL,), tool_choice="required",
        response_format={"type": "json_object"}, extra={"seed": 7, "model": "ignored", "stream": False},
    )  # fmt: skip
    events = await run(model_for(upstream, client, "ok"), request)
    assert isinstance(events[-1], Done)
    body = upstream.requests[-1].body
    assert (body["model"], body["stream"], body["stream_options"]) == ("ok", True, {"include_usage": True})
    assert "max_tokens" not in body and "temperature" not in body and "stop" not in body
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather where this was taken?"}, image]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_9", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
        ]},
        {"role": "tool", "content": "-3 C, snow", "tool_call_id": "call_9"},
    ]  # fmt: skip
    assert body["tools"] == [WEATHER_TOOL]
    assert (body["tool_choice"], body["response_format"], body["seed"]) == ("required", {"type": "json_object"}, 7)


async def test_request_body_keeps_typed_fields_over_extra(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    request = ChatRequest(messages=REQUEST.messages, max_tokens=5, temperature=0.0, stop=("\n",),
                          tool_choice="auto", extra={"max_tokens": 99, "top_p": 0.5})
    await run(model_for(upstream, client, "ok"), request)
    body = upstream.requests[-1].body
    assert (body["max_tokens"], body["temperature"], body["stop"], body["top_p"]) == (5, 0.0, ["\n"], 0.5)
    assert "tool_choice" not in body and "tools" not in body  # tool_choice is only sent with tools


# -- Azure: the same adapter, another Provider ----------------------------------------------------------


async def test_azure_url_query_and_key_header(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    events = await run(azure_for(upstream, client, "ok"))
    assert isinstance(events[-1], Done) and events[-1].provider == "azure-east"
    recorded = upstream.requests[-1]
    assert recorded.path == "/openai/deployments/ok/chat/completions"
    assert recorded.query == {"api-version": "2024-10-21"}
    assert recorded.headers["api-key"] == API_KEY
    assert "authorization" not in recorded.headers
    await run(azure_for(upstream, client, "ok", api_version="2025-01-01-preview"))
    assert upstream.requests[-1].query == {"api-version": "2025-01-01-preview"}


async def test_azure_faults_name_the_provider_never_the_key(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    for deployment, code in [("status-401", "upstream_error"), ("status-429", "rate_limited"),
                             ("context-too-long", "context_length_exceeded"), ("reset", "upstream_error")]:
        error = error_of(await run(azure_for(upstream, client, deployment)), "azure-chat", "azure-east")
        assert error.code == code
        assert upstream.root_url not in error.message


# -- the upstream itself ---------------------------------------------------------------------------------


async def test_upstream_lists_models(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    openai = (await client.get(f"{upstream.base_url}/models")).json()
    assert "ok" in [m["id"] for m in openai["data"]] and openai["object"] == "list"
    anthropic = (await client.get(f"{upstream.base_url}/models", headers={"anthropic-version": "2023-06-01"})).json()
    assert anthropic["data"][0]["type"] == "model" and anthropic["has_more"] is False


def test_provider_repr_and_redaction_hide_the_key() -> None:
    provider = Provider(name="acme", base_url="https://api.acme.test/v1", model="m", api_key=API_KEY,
                        headers={"X-Api-Key": "hdr-secret-value", "Accept": "application/json"},
                        query={"sig": "query-secret-value", "api-version": "2024-10-21"})
    assert API_KEY not in repr(provider)
    text = provider.redact(f"bad key {API_KEY}, header hdr-secret-value, query query-secret-value, "
                           "other sk-abcdef123456789, application/json 2024-10-21")
    for secret in (API_KEY, "hdr-secret-value", "query-secret-value", "sk-abcdef123456789"):
        assert secret not in text
    assert "application/json" in text and "2024-10-21" in text


def test_provider_urls() -> None:
    plain = Provider(name="p", base_url="http://h/v1/", model="m")
    assert plain.url("chat/completions") == "http://h/v1/chat/completions"
    azure = Provider(name="a", base_url="https://r.openai.azure.com", model="my deploy",
                     paths={"chat/completions": "openai/deployments/{model}/chat/completions"},
                     query={"api-version": "2024-10-21"})
    assert azure.url("chat/completions") == (
        "https://r.openai.azure.com/openai/deployments/my%20deploy/chat/completions?api-version=2024-10-21"
    )
    assert azure.url("embeddings") == "https://r.openai.azure.com/embeddings?api-version=2024-10-21"
