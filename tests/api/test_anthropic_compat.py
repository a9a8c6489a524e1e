"""The Anthropic-compatible ``POST /v1/messages`` over real HTTP, checked with plain httpx: the exact event
order of a stream, the ``message`` object, request translation (system, images, tools, tool results),
and Anthropic's error shape for every failure, before and after a stream began."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.api.compat_env import (
    ADMIN_KEY,
    DEFAULT_ANSWER,
    TOOL_ARGUMENTS,
    UPSTREAM_KEY,
    client,
    server,
    sse_events,
    upstream,
)
from tests.conftest import LiveServer
from tests.fault_upstream import FaultUpstream

__all__ = ["server", "upstream"]  # module-scoped fixtures used below

HELLO = [{"role": "user", "content": "Hello there"}]
WEATHER = {"name": "get_weather", "description": "The weather in a city.",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
VERSION = {"anthropic-version": "2023-06-01"}
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


def messages(model: str = "claude-test", **fields: Any) -> dict[str, Any]:
    return {"model": model, "max_tokens": 100, "messages": HELLO, **fields}


def anthropic_client(server: LiveServer) -> httpx.AsyncClient:
    """Authenticates the way Anthropic's SDK does: ``x-api-key`` plus ``anthropic-version``."""
    return httpx.AsyncClient(base_url=server.url, headers={"x-api-key": ADMIN_KEY, **VERSION}, timeout=30)


def assert_anthropic_error(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == kind and body["error"]["message"]
    assert body["request_id"] == response.headers["x-request-id"]
    for secret in (ADMIN_KEY, UPSTREAM_KEY, "Traceback", 'File "'):
        assert secret not in response.text
    return str(body["error"]["message"])


@pytest.mark.parametrize(("model", "provider"), [("claude-test", "claude"), ("gpt-test", "up")])
async def test_text_stream_event_order(server: LiveServer, model: str, provider: str) -> None:
    async with anthropic_client(server) as http:
        response = await http.post("/v1/messages", json=messages(model, stream=True))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-atrium-model"] == model and response.headers["x-atrium-provider"] == provider
    events = sse_events(response.text)
    names = [name for name, _ in events]
    assert names == ["message_start", "content_block_start", "ping", *["content_block_delta"] * 15,
                     "content_block_stop", "message_delta", "message_stop"]
    start = events[0][1]["message"]
    assert start["id"].startswith("msg_") and start["model"] == model and start["content"] == []
    assert (start["type"], start["role"], start["stop_reason"]) == ("message", "assistant", None)
    assert set(start["usage"]) >= {"input_tokens", "output_tokens"}
    assert events[1][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    deltas = [data for name, data in events if name == "content_block_delta"]
    assert all(d["index"] == 0 and d["delta"]["type"] == "text_delta" for d in deltas)
    assert "".join(d["delta"]["text"] for d in deltas) == DEFAULT_ANSWER
    assert events[-3][1] == {"type": "content_block_stop", "index": 0}
    delta = events[-2][1]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 15 and delta["usage"]["input_tokens"] == 2


@pytest.mark.parametrize("model", ["claude-tool", "gpt-tool"])
async def test_tool_use_stream_event_order(server: LiveServer, model: str) -> None:
    async with anthropic_client(server) as http:
        response = await http.post("/v1/messages", json=messages(model, stream=True, tools=[WEATHER]))
    events = sse_events(response.text)
    names = [name for name, _ in events]
    starts = [data for name, data in events if name == "content_block_start"]
    tool_start = starts[-1]
    assert tool_start["content_block"]["type"] == "tool_use" and tool_start["content_block"]["name"] == "get_weather"
    assert tool_start["content_block"]["input"] == {} and tool_start["content_block"]["id"]
    index = tool_start["index"]
    assert index == len(starts) - 1  # blocks are numbered from 0 in order
    json_deltas = [d["delta"] for n, d in events if n == "content_block_delta" and d["index"] == index]
    assert all(d["type"] == "input_json_delta" for d in json_deltas)
    assert "".join(d["partial_json"] for d in json_deltas) == TOOL_ARGUMENTS
    assert names[0] == "message_start" and names[1] == "content_block_start" and names[2] == "ping"
    assert names.count("ping") == 1 and names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == names.count("content_block_stop") == len(starts)
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    if model == "claude-tool":  # the Anthropic upstream says something first: a text block, then the call
        assert [s["content_block"]["type"] for s in starts] == ["text", "tool_use"]


async def test_stream_cut_after_output_ends_with_an_error_event(server: LiveServer) -> None:
    async with anthropic_client(server) as http:
        response = await http.post("/v1/messages", json=messages("claude-cut", stream=True))
    assert response.status_code == 200
    events = sse_events(response.text)
    names = [name for name, _ in events]
    assert names[0] == "message_start" and "message_stop" not in names and "message_delta" not in names
    assert names[-1] == "error"
    error = events[-1][1]
    assert set(error) == {"type", "error", "request_id"} and set(error["error"]) == {"type", "message"}
    assert error["error"]["type"] == "api_error" and error["error"]["message"]
    text = "".join(data["delta"].get("text", "") for name, data in events if name == "content_block_delta")
    assert text == "The quick"
    assert UPSTREAM_KEY not in response.text


async def test_message_object(server: LiveServer) -> None:
    async with anthropic_client(server) as http:
        text = await http.post("/v1/messages", json=messages("gpt-test", max_tokens=4))
        tool = await http.post("/v1/messages", json=messages("claude-tool", tools=[WEATHER]))
    assert text.status_code == 200 and text.headers["x-atrium-model"] == "gpt-test"
    body = text.json()
    assert body["id"].startswith("msg_")
    assert {k: v for k, v in body.items() if k != "id"} == {
        "type": "message", "role": "assistant", "model": "gpt-test",
        "content": [{"type": "text", "text": "The quick brown fox"}], "stop_reason": "max_tokens",
        "stop_sequence": None, "usage": {"input_tokens": 2, "output_tokens": 4}}
    content = tool.json()["content"]
    assert [block["type"] for block in content] == ["text", "tool_use"]
    assert content[1]["name"] == "get_weather" and content[1]["input"] == json.loads(TOOL_ARGUMENTS)
    assert content[1]["id"] and tool.json()["stop_reason"] == "tool_use"


async def test_request_translation(server: LiveServer, upstream: FaultUpstream) -> None:
    history = [
        {"role": "user", "content": [{"type": "text", "text": "What is in this picture?"},
                                     {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                                  "data": PIXEL}}]},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"},
                                          {"type": "text", "text": "Let me look."},
                                          {"type": "tool_use", "id": "toolu_9", "name": "get_weather",
                                           "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "is_error": True,
                                      "content": [{"type": "text", "text": "service down"}]},
                                     {"type": "text", "text": "Try again?"}]},
    ]
    async with anthropic_client(server) as http:
        response = await http.post("/v1/messages", json=messages(
            "gpt-test", messages=history, system=[{"type": "text", "text": "Be brief."},
                                                  {"type": "text", "text": "Be kind."}],
            tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
            top_p=0.9, stop_sequences=["END"], metadata={"user_id": "u-7"}, cache=False))
    assert response.status_code == 200, response.text
    sent = upstream.requests[-1].body
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief.\nBe kind."},
        {"role": "user", "content": [{"type": "text", "text": "What is in this picture?"},
                                     {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}}]},
        {"role": "assistant", "content": "Let me look.", "tool_calls": [{
            "id": "toolu_9", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_9", "content": "Error: service down"},
        {"role": "user", "content": "Try again?"},
    ]
    assert sent["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "parameters": WEATHER["input_schema"], "description": WEATHER["description"]}}]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["parallel_tool_calls"] is False and sent["top_p"] == 0.9 and sent["user"] == "u-7"
    assert sent["stop"] == ["END"] and sent["max_tokens"] == 100


async def test_anthropic_upstream_gets_anthropic_params(server: LiveServer, upstream: FaultUpstream) -> None:
    async with anthropic_client(server) as http:
        response = await http.post("/v1/messages", json=messages(
            system="Be brief.", top_k=5, tools=[WEATHER], tool_choice={"type": "any"}, cache=False))
    assert response.status_code == 200, response.text
    sent = upstream.requests[-1].body
    assert sent["system"] == "Be brief." and sent["top_k"] == 5
    assert sent["tool_choice"] == {"type": "any"} and sent["tools"][0]["name"] == "get_weather"


async def test_auth_headers(server: LiveServer) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        sdk_style = await http.post("/v1/messages", json=messages(),
                                    headers={"x-api-key": ADMIN_KEY, "anthropic-version": "2099-01-01"})
        bearer = await http.post("/v1/messages", json=messages(), headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        missing = await http.post("/v1/messages", json=messages(), headers=VERSION)
        wrong = await http.post("/v1/messages", json=messages(),
                                headers={"x-api-key": "atr_wrong_key_0123456789abcdefghijkl", **VERSION})
    assert sdk_style.status_code == 200 and bearer.status_code == 200
    assert_anthropic_error(missing, 401, "authentication_error")
    assert_anthropic_error(wrong, 401, "authentication_error")


@pytest.mark.parametrize("stream", [False, True])
async def test_failures_before_output(server: LiveServer, stream: bool) -> None:
    async with anthropic_client(server) as http:
        unavailable = await http.post("/v1/messages", json=messages("gpt-503", stream=stream))
        limited = await http.post("/v1/messages", json=messages("gpt-429", stream=stream))
        slow = await http.post("/v1/messages", json=messages("gpt-slow", stream=stream))
        unknown = await http.post("/v1/messages", json=messages("no-such-model", stream=stream))
    assert_anthropic_error(unavailable, 503, "overloaded_error")
    assert_anthropic_error(limited, 429, "rate_limit_error")
    assert int(limited.headers["retry-after"]) >= 1
    assert_anthropic_error(slow, 504, "api_error")
    assert "no-such-model" in assert_anthropic_error(unknown, 404, "not_found_error")


async def test_invalid_requests(server: LiveServer) -> None:
    async with anthropic_client(server) as http:
        no_max = await http.post("/v1/messages", json={"model": "claude-test", "messages": HELLO})
        bad_role = await http.post("/v1/messages", json=messages(messages=[{"role": "system", "content": "x"}]))
        document = await http.post("/v1/messages", json=messages(messages=[{"role": "user", "content": [
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}]}]))
        server_tool = await http.post("/v1/messages", json=messages(tools=[{"type": "web_search_20250305",
                                                                            "name": "web_search", "input_schema": {}}]))
        too_long = await http.post("/v1/messages", json=messages(messages=[{"role": "user", "content": "x" * 9000}]))
        not_json = await http.post("/v1/messages", content=b"{", headers={"content-type": "application/json"})
        embedding = await http.post("/v1/messages", json=messages("embed-3"))
    assert "max_tokens" in assert_anthropic_error(no_max, 400, "invalid_request_error")
    assert_anthropic_error(bad_role, 400, "invalid_request_error")
    assert "document" in assert_anthropic_error(document, 400, "invalid_request_error")
    assert "server tools" in assert_anthropic_error(server_tool, 400, "invalid_request_error")
    assert_anthropic_error(too_long, 413, "request_too_large")
    assert_anthropic_error(not_json, 400, "invalid_request_error")
    assert_anthropic_error(embedding, 400, "invalid_request_error")


async def test_body_too_large_in_anthropic_shape(server: LiveServer) -> None:
    limit = server.services.settings.limits.max_request_bytes

    async def chunks() -> Any:
        yield b'{"model": "claude-test", "max_tokens": 10, "messages": [{"role": "user", "content": "'
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536
        yield b'"}]}'

    async with anthropic_client(server) as http:
        response = await http.post("/v1/messages", content=chunks(), headers={"content-type": "application/json"})
    assert_anthropic_error(response, 413, "request_too_large")


async def test_openai_paths_keep_openai_shape_next_to_messages(server: LiveServer) -> None:
    async with client(server) as http:
        response = await http.post("/v1/chat/completions", json={"model": "no-such-model", "messages": HELLO})
    assert response.status_code == 404 and "type" not in response.json()
    assert response.json()["error"]["code"] == "model_not_found"
