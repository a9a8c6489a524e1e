"""AnthropicChatModel against the fault-injecting upstream: request translation (asserted on the JSON
and headers the upstream received; the upstream also refuses what Anthropic refuses: missing max_tokens or
version header, roles that do not alternate), the event order, tool-use streaming, and every fault ending
the stream with the right ``ErrorEvent``, never ``Done``, never leaking the key."""

from __future__ import annotations

import json
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
from atrium.gateway.providers.anthropic_format import AnthropicChatModel
from atrium.gateway.providers.base import Provider
from tests.fault_upstream import DEFAULT_ANSWER, TOOL_ARGUMENTS, TOOL_PREAMBLE, FaultUpstream

API_KEY = "sk-ant-api03-THIS-MUST-NEVER-LEAK-0123456789"
QUESTION = ChatMessage("user", "Tell me about foxes and rivers.")
REQUEST = ChatRequest(messages=(QUESTION,), max_tokens=50)
WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city.",
                                                 "parameters": {"type": "object",
                                                                "properties": {"city": {"type": "string"}}}}}
TIME_TOOL = {"type": "function", "function": {"name": "get_time"}}


@pytest.fixture(autouse=True)
def _no_blocking_calls(blockbuster: BlockBuster) -> Iterator[None]:
    yield


def model_for(upstream: FaultUpstream, client: httpx.AsyncClient, mode: str, *, api_version: str | None = None,
              **kwargs: object) -> AnthropicChatModel:
    provider = Provider(name="claude", base_url=upstream.root_url, model=mode, api_key=API_KEY,
                        api_version=api_version)
    return AnthropicChatModel(provider, client, name="claude-chat", **kwargs)  # type: ignore[arg-type]


async def run(model: AnthropicChatModel, request: ChatRequest = REQUEST) -> list[ChatEvent]:
    return [event async for event in model.stream(request)]


def error_of(events: list[ChatEvent]) -> ErrorEvent:
    assert not any(isinstance(event, Done) for event in events), events
    assert sum(isinstance(event, ErrorEvent) for event in events) == 1, events
    error = events[-1]
    assert isinstance(error, ErrorEvent), events
    assert API_KEY not in error.message and "THIS-MUST-NEVER-LEAK" not in error.message
    assert (error.model, error.provider) == ("claude-chat", "claude")
    return error


def done_of(events: list[ChatEvent]) -> Done:
    assert not any(isinstance(event, ErrorEvent) for event in events), events
    assert isinstance(events[-1], Done), events
    return events[-1]


def tokens_of(events: list[ChatEvent]) -> list[str]:
    return [event.text for event in events if isinstance(event, Token)]


# -- answers ---------------------------------------------------------------------------------------------


async def test_stream_tokens_usage_done(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    events = await run(model_for(upstream, client, "ok"))
    assert "".join(tokens_of(events)) == "The quick brown fox jumps over the lazy dog near the quiet river bank today."
    assert events[-2] == Usage(prompt_tokens=6, completion_tokens=15)  # input_tokens, output_tokens
    assert done_of(events) == Done(model="claude-chat", finish_reason="stop", provider="claude")


@pytest.mark.parametrize(("request_", "text", "finish", "sequence"), [
    (ChatRequest(messages=(QUESTION,), max_tokens=3), "The quick brown", "length", None),
    (ChatRequest(messages=(QUESTION,), stop=("END", " fox")), "The quick brown", "stop", " fox"),
    (ChatRequest(messages=(QUESTION,), stop=("END",)), DEFAULT_ANSWER, "stop", None),
])  # fmt: skip
async def test_finish_reasons(upstream: FaultUpstream, client: httpx.AsyncClient, request_: ChatRequest,
                              text: str, finish: str, sequence: str | None) -> None:
    events = await run(model_for(upstream, client, "ok"), request_)
    assert "".join(tokens_of(events)) == text
    assert (done_of(events).finish_reason, done_of(events).stop_sequence) == (finish, sequence)


async def test_non_streamed_message_is_accepted(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    events = await run(model_for(upstream, client, "json"))
    assert "".join(tokens_of(events)).startswith("The quick brown fox")
    assert events[-2] == Usage(prompt_tokens=6, completion_tokens=15)
    assert done_of(events).finish_reason == "stop"


async def test_finish_then_clean_close_is_complete(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    done_of(await run(model_for(upstream, client, "finish-then-eof")))


# -- tool use ----------------------------------------------------------------------------------------------


async def test_tool_use_streams_as_tool_call_deltas(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    request = ChatRequest(messages=(QUESTION,), tools=(WEATHER_TOOL, TIME_TOOL))
    events = await run(model_for(upstream, client, "tool-2"), request)
    assert tokens_of(events) == [TOOL_PREAMBLE]  # the text block before the tool_use blocks
    deltas = [event for event in events if isinstance(event, ToolCallDelta)]
    # tool calls are numbered among themselves (0, 1), not by content block (1, 2)
    assert deltas[0] == ToolCallDelta(index=0, id="toolu_1", name="get_weather", arguments="")
    assert [d.index for d in deltas if d.id] == [0, 1]
    for index, (call_id, name) in enumerate([("toolu_1", "get_weather"), ("toolu_2", "get_time")]):
        pieces = [d for d in deltas if d.index == index]
        assert (pieces[0].id, pieces[0].name) == (call_id, name)
        assert "".join(d.arguments for d in pieces) == TOOL_ARGUMENTS
        assert len(pieces) == 4  # start + three input_json_delta pieces
    assert done_of(events).finish_reason == "tool_calls"


async def test_non_streamed_tool_use(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    events = await run(model_for(upstream, client, "json-tool"), ChatRequest(messages=(QUESTION,),
                                                                           tools=(WEATHER_TOOL,)))
    deltas = [event for event in events if isinstance(event, ToolCallDelta)]
    assert len(deltas) == 1 and (deltas[0].index, deltas[0].id, deltas[0].name) == (0, "toolu_1", "get_weather")
    assert json.loads(deltas[0].arguments) == json.loads(TOOL_ARGUMENTS)
    assert done_of(events).finish_reason == "tool_calls"


# -- request translation -------------------------------------------------------------------------------


async def test_request_translation(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    request = ChatRequest(
        messages=(
            ChatMessage("system", "Be brief."),
            ChatMessage("user", ({"type": "text", "text": "Weather where this was taken?"}, image)),
            ChatMessage("user", "Celsius please."),
            ChatMessage("system", "Never guess."),
            ChatMessage("assistant", "Checking.", tool_calls=(ToolCall("toolu_9", "get_weather", '{"city": "Oslo"}'),
                                                              ToolCall("toolu_8", "get_time", ""))),
            ChatMessage("tool", "-3 C, snow", tool_call_id="toolu_9"),
            ChatMessage("tool", "14:00", tool_call_id="toolu_8"),
            ChatMessage("user", "And tomorrow?"),
        ),
        max_tokens=None, temperature=1.7, stop=("\n\n", "END"), tools=(WEATHER_TOOL, TIME_TOOL),
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        response_format={"type": "json_object"}, extra={"top_k": 5, "seed": 7, "parallel_tool_calls": False},
    )  # fmt: skip
    done_of(await run(model_for(upstream, client, "ok", default_max_tokens=321), request))
    recorded = upstream.requests[-1]
    assert (recorded.method, recorded.path) == ("POST", "/v1/messages")
    assert recorded.headers["x-api-key"] == API_KEY and "authorization" not in recorded.headers
    assert recorded.headers["anthropic-version"] == "2023-06-01"
    assert recorded.headers["content-type"] == "application/json"
    body = recorded.body
    assert body["system"] == "Be brief.\n\nNever guess."
    assert body["messages"] == [
        {"role": "user", "content": [
            {"type": "text", "text": "Weather where this was taken?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
            {"type": "text", "text": "Celsius please."},
        ]},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Oslo"}},
            {"type": "tool_use", "id": "toolu_8", "name": "get_time", "input": {}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_9", "content": "-3 C, snow"},
            {"type": "tool_result", "tool_use_id": "toolu_8", "content": "14:00"},
            {"type": "text", "text": "And tomorrow?"},
        ]},
    ]  # fmt: skip
    assert body["tools"] == [
        {"name": "get_weather", "description": "Weather in a city.",
         "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}},
        {"name": "get_time", "input_schema": {"type": "object", "properties": {}}},
    ]  # fmt: skip
    assert body["tool_choice"] == {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True}
    assert (body["model"], body["stream"], body["max_tokens"], body["temperature"]) == ("ok", True, 321, 1.0)
    assert body["stop_sequences"] == ["\n\n", "END"]
    assert body["top_k"] == 5
    assert "seed" not in body and "response_format" not in body and "parallel_tool_calls" not in body


@pytest.mark.parametrize(("choice", "history", "tools", "expected"), [
    (None, False, True, None),
    ("auto", False, True, {"type": "auto"}),
    ("required", False, True, {"type": "any"}),
    ("none", False, False, None),  # no tools at all
    ("none", True, True, {"type": "none"}),  # tool blocks in the history need the tools defined
])  # fmt: skip
async def test_tool_choice(
    upstream: FaultUpstream, client: httpx.AsyncClient, choice: object, history: bool, tools: bool, expected: object
) -> None:
    messages = (QUESTION,)
    if history:
        messages += (ChatMessage("assistant", "", tool_calls=(ToolCall("t1", "get_weather", "{}"),)),
                     ChatMessage("tool", "sunny", tool_call_id="t1"))
    done_of(await run(model_for(upstream, client, "ok"),
                      ChatRequest(messages=messages, tools=(WEATHER_TOOL,), tool_choice=choice)))
    body = upstream.requests[-1].body
    assert ("tools" in body) is tools
    assert body.get("tool_choice") == expected


async def test_version_header_and_url_image(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.test/cat.png"}}
    request = ChatRequest(messages=(ChatMessage("user", ({"type": "text", "text": "What is it?"}, image)),))
    done_of(await run(model_for(upstream, client, "ok", api_version="2025-01-01"), request))
    recorded = upstream.requests[-1]
    assert recorded.headers["anthropic-version"] == "2025-01-01"
    assert recorded.body["messages"][0]["content"][1] == {
        "type": "image", "source": {"type": "url", "url": "https://example.test/cat.png"}
    }


async def test_untranslatable_content_fails_before_any_request(
    upstream: FaultUpstream, client: httpx.AsyncClient
) -> None:
    audio = {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}
    before = upstream.count("audio-model")
    error = error_of(await run(model_for(upstream, client, "audio-model"),
                               ChatRequest(messages=(ChatMessage("user", (audio,)),))))
    assert (error.code, error.retryable) == ("invalid_request", False)
    assert upstream.count("audio-model") == before


# -- faults ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "code", "retryable"),
    [
        ("status-500", "upstream_error", True),
        ("status-529", "model_unavailable", True),  # overloaded_error
        ("status-503", "model_unavailable", True),
        ("status-504", "model_timeout", True),
        ("status-429", "rate_limited", True),
        ("status-400", "upstream_error", False),
        ("status-401", "upstream_error", False),
        ("status-403", "upstream_error", False),
        ("status-404", "model_unavailable", False),
        ("context-too-long", "context_length_exceeded", False),
        ("quota", "upstream_error", False),  # billing_error
        ("reset", "upstream_error", True),
        ("cut-chunked", "upstream_error", True),
        ("cut-eof", "upstream_error", True),
        ("no-message-stop", "upstream_error", True),
        ("malformed", "upstream_error", True),
        ("error-payload", "model_unavailable", True),  # event: error, overloaded_error
    ],
)
async def test_faults_map_to_error_events(
    upstream: FaultUpstream, client: httpx.AsyncClient, mode: str, code: str, retryable: bool
) -> None:
    error = error_of(await run(model_for(upstream, client, mode)))
    assert (error.code, error.retryable) == (code, retryable)
    assert "claude" in error.message and upstream.root_url not in error.message


async def test_a_cut_stream_keeps_its_tokens_but_never_ends_with_usage_or_done(
    upstream: FaultUpstream, client: httpx.AsyncClient
) -> None:
    events = await run(model_for(upstream, client, "no-message-stop"))
    assert len(tokens_of(events)) == 15
    assert not any(isinstance(event, Usage) for event in events)
    assert "message_stop" in error_of(events).message
    events = await run(model_for(upstream, client, "malformed"))
    assert tokens_of(events) == ["The"] and "malformed" in error_of(events).message


@pytest.mark.parametrize(("mode", "low", "high"), [("status-429", 1.0, 1.0), ("rate-limited-ms", 1.5, 1.5),
                                                   ("rate-limited-date", 0.5, 3.5)])
async def test_rate_limits_carry_retry_after(
    upstream: FaultUpstream, client: httpx.AsyncClient, mode: str, low: float, high: float
) -> None:
    error = error_of(await run(model_for(upstream, client, mode)))
    assert error.code == "rate_limited" and error.retry_after is not None and low <= error.retry_after <= high


async def test_401_never_echoes_the_key(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    error = error_of(await run(model_for(upstream, client, "status-401")))
    assert "401" in error.message
    assert upstream.requests[-1].headers["x-api-key"] == API_KEY  # sent, never shown


async def test_context_too_long_keeps_the_upstream_message(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    assert "prompt is too long" in error_of(await run(model_for(upstream, client, "context-too-long"))).message


async def test_stall_and_slow_time_out(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    events = await run(model_for(upstream, client, "stall", timeout=httpx.Timeout(0.3)))
    assert (error_of(events).code, tokens_of(events)) == ("model_timeout", ["The"])
    assert error_of(await run(model_for(upstream, client, "slow-1000", timeout=httpx.Timeout(0.2)))).retryable
    done_of(await run(model_for(upstream, client, "slow-50")))


async def test_fail_first_then_answers(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    model = model_for(upstream, client, "fail-first-1")
    assert error_of(await run(model)).code == "model_unavailable"
    done_of(await run(model))
    assert upstream.count("fail-first-1") == 2


async def test_random_cuts(client: httpx.AsyncClient) -> None:
    async with FaultUpstream(cut_rate=1.0, seed=3) as server:
        error = error_of(await run(model_for(server, client, "ok")))
    assert (error.code, error.retryable) == ("upstream_error", True)


async def test_connection_refused(client: httpx.AsyncClient) -> None:
    provider = Provider(name="claude", base_url="http://127.0.0.1:9", model="ok", api_key=API_KEY)
    error = error_of(await run(AnthropicChatModel(provider, client, name="claude-chat")))
    assert (error.code, error.retryable) == ("model_unavailable", True)


async def test_closed_model_refuses(upstream: FaultUpstream, client: httpx.AsyncClient) -> None:
    model = model_for(upstream, client, "ok")
    assert await model.ready() is True
    await model.aclose()
    assert await model.ready() is False
    assert error_of(await run(model)).code == "model_unavailable"
