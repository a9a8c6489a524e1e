"""The OpenAI-compatible API over real HTTP, checked byte by byte with plain httpx: SSE framing, headers,
OpenAI's error shape on every failure, embeddings, models, the cache switch and client disconnects."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sqlalchemy import select

from atrium.store.models import UsageRecord
from tests.api.compat_env import (
    ADMIN_KEY,
    AUTH,
    DEFAULT_ANSWER,
    TOOL_ARGUMENTS,
    UPSTREAM_KEY,
    WEATHER_TOOL,
    client,
    compat_server,
    data_frames,
    server,
    upstream,
)
from tests.conftest import LiveServer
from tests.fault_upstream import FaultUpstream

__all__ = ["server", "upstream"]  # module-scoped fixtures used below

HELLO = [{"role": "user", "content": "Hello there"}]


def chat(model: str = "gpt-test", **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": HELLO, **fields}


def assert_openai_error(response: httpx.Response, status: int, code: str | None, kind: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["type"] == kind and error["message"]
    if code is not None:
        assert error["code"] == code
    assert error["request_id"] == response.headers["x-request-id"]
    for secret in (ADMIN_KEY, UPSTREAM_KEY, "Traceback", 'File "'):
        assert secret not in response.text
    return error


async def test_completion_object(server: LiveServer) -> None:
    async with client(server) as http:
        response = await http.post("/v1/chat/completions", json=chat(max_tokens=5))
    assert response.status_code == 200, response.text
    assert response.headers["x-atrium-model"] == "gpt-test"
    assert response.headers["x-atrium-provider"] == "up"
    assert response.headers["x-request-id"]
    body = response.json()
    assert body["id"].startswith("chatcmpl-") and body["object"] == "chat.completion"
    assert isinstance(body["created"], int) and body["model"] == "gpt-test"
    assert body["choices"] == [{"index": 0, "logprobs": None, "finish_reason": "length", "message": {
        "role": "assistant", "content": "The quick brown fox jumps", "refusal": None}}]
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 5, "total_tokens": 7}


async def test_stream_framing_with_usage(server: LiveServer) -> None:
    async with client(server) as http:
        response = await http.post("/v1/chat/completions",
                                   json=chat(stream=True, stream_options={"include_usage": True}))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-atrium-model"] == "gpt-test" and response.headers["x-atrium-provider"] == "up"
    frames = data_frames(response.text)
    assert frames[-1] == "[DONE]"
    chunks = [json.loads(frame) for frame in frames[:-1]]
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == "gpt-test" for c in chunks)
    first, *content, last, usage = chunks
    assert first["choices"][0]["delta"]["role"] == "assistant"
    assert first["choices"][0]["finish_reason"] is None and first["usage"] is None
    assert "".join(c["choices"][0]["delta"]["content"] for c in content) == DEFAULT_ANSWER
    assert all(c["choices"][0]["finish_reason"] is None and c["usage"] is None for c in content)
    assert last["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 2, "completion_tokens": 15, "total_tokens": 17}


async def test_stream_without_usage_has_no_usage_chunk(server: LiveServer) -> None:
    async with client(server) as http:
        response = await http.post("/v1/chat/completions", json=chat(stream=True))
    frames = data_frames(response.text)
    assert frames[-1] == "[DONE]"
    chunks = [json.loads(frame) for frame in frames[:-1]]
    assert all("usage" not in c and len(c["choices"]) == 1 for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_stream_tool_call_deltas(server: LiveServer) -> None:
    async with client(server) as http:
        response = await http.post("/v1/chat/completions", json=chat("gpt-tool", stream=True, tools=[WEATHER_TOOL]))
    frames = data_frames(response.text)
    assert frames[-1] == "[DONE]"
    deltas = [json.loads(f)["choices"][0] for f in frames[:-1]]
    calls = [d["delta"]["tool_calls"][0] for d in deltas if "tool_calls" in d["delta"]]
    assert calls[0] == {"index": 0, "id": "call_1", "type": "function",
                        "function": {"name": "get_weather", "arguments": ""}}
    assert all(set(c) == {"index", "function"} and set(c["function"]) == {"arguments"} for c in calls[1:])
    assert "".join(c["function"]["arguments"] for c in calls) == TOOL_ARGUMENTS
    assert deltas[-1]["finish_reason"] == "tool_calls"


async def test_completion_with_tool_calls(server: LiveServer, upstream: FaultUpstream) -> None:
    async with client(server) as http:
        response = await http.post("/v1/chat/completions", json=chat("gpt-tool", tools=[WEATHER_TOOL],
                                                                     tool_choice="auto", cache=False))
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    assert choice["message"]["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": TOOL_ARGUMENTS}}]
    sent = upstream.requests[-1].body
    assert sent["tools"] == [WEATHER_TOOL] and sent["tool_choice"] == "auto"


async def test_stream_cut_after_output_ends_with_an_error_event(server: LiveServer) -> None:
    async with client(server) as http:
        response = await http.post("/v1/chat/completions", json=chat("gpt-cut", stream=True))
    assert response.status_code == 200
    frames = data_frames(response.text)
    assert "[DONE]" not in frames
    chunks = [json.loads(frame) for frame in frames]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1]) == "The quick"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    error = chunks[-1]["error"]
    assert error["type"] == "server_error" and error["code"] == "upstream_error" and error["message"]
    assert UPSTREAM_KEY not in response.text


async def test_non_stream_cut_is_an_http_error(server: LiveServer) -> None:
    async with client(server) as http:
        response = await http.post("/v1/chat/completions", json=chat("gpt-cut"))
    assert_openai_error(response, 502, "upstream_error", "server_error")


@pytest.mark.parametrize("stream", [False, True])
async def test_failure_before_output_is_an_http_status(server: LiveServer, stream: bool) -> None:
    async with client(server) as http:
        unavailable = await http.post("/v1/chat/completions", json=chat("gpt-503", stream=stream))
        limited = await http.post("/v1/chat/completions", json=chat("gpt-429", stream=stream))
        slow = await http.post("/v1/chat/completions", json=chat("gpt-slow", stream=stream))
    assert_openai_error(unavailable, 503, "model_unavailable", "server_error")
    assert_openai_error(limited, 429, "rate_limit_exceeded", "rate_limit_error")
    assert int(limited.headers["retry-after"]) >= 1
    assert_openai_error(slow, 504, "model_timeout", "server_error")


async def test_fallback_route_names_the_serving_model(server: LiveServer) -> None:
    async with client(server) as http:
        plain = await http.post("/v1/chat/completions", json=chat("resilient"))
        streamed = await http.post("/v1/chat/completions", json=chat("resilient", stream=True))
    assert plain.status_code == 200 and plain.headers["x-atrium-model"] == "gpt-test"
    assert plain.json()["model"] == "gpt-test"
    assert streamed.headers["x-atrium-model"] == "gpt-test"
    assert json.loads(data_frames(streamed.text)[0])["model"] == "gpt-test"


async def test_request_validation_in_openai_shape(server: LiveServer) -> None:
    async with client(server) as http:
        missing = await http.post("/v1/chat/completions", json={"model": "gpt-test"})
        bad_role = await http.post("/v1/chat/completions", json=chat(messages=[{"role": "robot", "content": "x"}]))
        two = await http.post("/v1/chat/completions", json=chat(n=2))
        not_json = await http.post("/v1/chat/completions", content=b"{nope",
                                   headers={"content-type": "application/json"})
        parts = await http.post("/v1/chat/completions", json=chat(messages=[
            {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]))
        long = await http.post("/v1/chat/completions", json=chat(messages=[{"role": "user", "content": "x" * 9000}]))
        choice_without_tools = await http.post("/v1/chat/completions", json=chat(tool_choice="required"))
        embedding_model = await http.post("/v1/chat/completions", json=chat("embed-3"))
    assert assert_openai_error(missing, 400, None, "invalid_request_error")["param"] == "messages"
    assert assert_openai_error(bad_role, 400, None, "invalid_request_error")["param"].startswith("messages.0")
    assert "n=1" in assert_openai_error(two, 400, "unsupported_parameter", "invalid_request_error")["message"]
    assert_openai_error(not_json, 400, None, "invalid_request_error")
    assert "input_audio" in assert_openai_error(parts, 400, "invalid_request", "invalid_request_error")["message"]
    assert_openai_error(long, 413, "payload_too_large", "invalid_request_error")
    assert_openai_error(choice_without_tools, 400, "invalid_request", "invalid_request_error")
    assert_openai_error(embedding_model, 400, "model_not_supported", "invalid_request_error")


async def test_unknown_fields_pass_and_known_vendor_params_reach_the_upstream(server: LiveServer,
                                                                             upstream: FaultUpstream) -> None:
    async with client(server) as http:
        response = await http.post("/v1/chat/completions", json=chat(
            cache=False, seed=7, top_p=0.5, user="u-1", presence_penalty=0.1, store=True, service_tier="auto",
            stop="river", response_format={"type": "json_object"},
            messages=[{"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
                      {"role": "user", "content": "Hi"}]))
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == DEFAULT_ANSWER[:DEFAULT_ANSWER.index("river")]
    sent = upstream.requests[-1].body
    assert {k: sent[k] for k in ("seed", "top_p", "user", "presence_penalty")} == {
        "seed": 7, "top_p": 0.5, "user": "u-1", "presence_penalty": 0.1}
    assert "store" not in sent and "service_tier" not in sent and "cache" not in sent
    assert sent["stop"] == ["river"] and sent["response_format"] == {"type": "json_object"}
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."}


async def test_errors_for_keys_paths_and_unexpected_failures(server: LiveServer,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    async with httpx.AsyncClient(base_url=server.url) as anonymous:
        missing = await anonymous.post("/v1/chat/completions", json=chat())
        wrong = await anonymous.post("/v1/chat/completions", json=chat(),
                                     headers={"Authorization": "Bearer atr_wrong_key_0123456789abcdefghijkl"})
    assert_openai_error(missing, 401, "invalid_api_key", "authentication_error")
    assert_openai_error(wrong, 401, "invalid_api_key", "authentication_error")
    assert missing.headers["www-authenticate"] == "Bearer"

    def explode(_request: object) -> None:
        raise RuntimeError(f"secret detail {ADMIN_KEY}")

    monkeypatch.setattr(server.services.gateway, "check", explode)
    async with client(server) as http:
        unknown_path = await http.get("/v1/nothing-here")
        crash = await http.post("/v1/chat/completions", json=chat())
        atrium_path = await http.get("/api/v1/nothing-here")
    assert_openai_error(unknown_path, 404, "not_found", "invalid_request_error")
    assert assert_openai_error(crash, 500, "internal_error", "server_error")["message"] == "Internal error."
    assert "secret detail" not in crash.text
    assert atrium_path.status_code == 404 and atrium_path.json()["error"]["code"] == "not_found"
    assert "type" not in atrium_path.json()["error"]  # Atrium's own API keeps its shape


async def test_body_too_large_in_openai_shape(server: LiveServer) -> None:
    limit = server.services.settings.limits.max_request_bytes

    async def chunks() -> Any:
        yield b'{"model": "gpt-test", "messages": [{"role": "user", "content": "'
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536
        yield b'"}]}'

    async with client(server) as http:
        streamed = await http.post("/v1/chat/completions", content=chunks(),
                                   headers={"content-type": "application/json"})
    assert_openai_error(streamed, 413, "payload_too_large", "invalid_request_error")


async def test_declared_body_too_large_in_openai_shape(server: LiveServer) -> None:
    limit = server.services.settings.limits.max_request_bytes
    async with client(server) as http:
        response = await http.post("/v1/chat/completions", json=chat(messages=[{"role": "user",
                                                                               "content": "x" * limit}]))
    assert_openai_error(response, 413, "payload_too_large", "invalid_request_error")


async def test_cache_is_skipped_on_request(server: LiveServer, upstream: FaultUpstream) -> None:
    body = chat(messages=[{"role": "user", "content": "cache me please"}])
    async with client(server) as http:

        async def upstream_calls(headers: dict[str, str] | None = None, **fields: Any) -> int:
            before = upstream.count("ok")
            response = await http.post("/v1/chat/completions", json={**body, **fields}, headers=headers)
            assert response.json()["choices"][0]["message"]["content"] == DEFAULT_ANSWER
            return upstream.count("ok") - before

        assert await upstream_calls() == 1
        assert await upstream_calls() == 0  # served from the cache
        assert await upstream_calls({"Cache-Control": "no-cache"}) == 1
        assert await upstream_calls({"x-atrium-cache": "bypass"}) == 1
        assert await upstream_calls(cache=False) == 1
        assert await upstream_calls() == 0


@pytest.mark.parametrize("stream", [True, False])
async def test_client_disconnect_closes_the_upstream_stream(tmp_path: Path, stream: bool) -> None:
    async with FaultUpstream(answer=" ".join(["word"] * 400), token_delay=0.05) as slow_upstream, \
            compat_server(tmp_path / "data", slow_upstream) as live:
        if stream:
            async with client(live) as http, http.stream("POST", "/v1/chat/completions",
                                                         json=chat(stream=True)) as response:
                async for line in response.aiter_lines():
                    if '"content":"word"' in line:
                        break  # hang up after the first word (the whole answer takes 20 s)
        else:
            async with httpx.AsyncClient(base_url=live.url, headers=AUTH, timeout=0.5) as impatient:
                with pytest.raises(httpx.ReadTimeout):
                    await impatient.post("/v1/chat/completions", json=chat())
        for _ in range(100):
            async with live.services.db.system_session() as session:
                rows = (await session.scalars(select(UsageRecord))).all()
            if rows:
                break
            await asyncio.sleep(0.05)
        # The gateway's stream was closed (metering records a cancelled call) long before the answer ended.
        assert [(row.endpoint, row.outcome) for row in rows] == [("/v1/chat/completions", "cancelled")]
        if stream:
            assert 0 < rows[0].completion_tokens < 100
        else:  # a non-stream request is one non-streamed upstream call: nothing had arrived yet
            assert rows[0].completion_tokens == 0


async def test_embeddings(server: LiveServer, upstream: FaultUpstream) -> None:
    async with client(server) as http:
        floats = await http.post("/v1/embeddings", json={"model": "embed-3", "input": ["red apple", "green pear"]})
        packed = await http.post("/v1/embeddings", json={"model": "embed-3", "input": "red apple",
                                                         "encoding_format": "base64"})
        short = await http.post("/v1/embeddings", json={"model": "embed-3", "input": "red apple", "dimensions": 16})
    assert floats.status_code == 200, floats.text
    body = floats.json()
    assert body["object"] == "list" and body["model"] == "embed-3"
    assert [(d["object"], d["index"]) for d in body["data"]] == [("embedding", 0), ("embedding", 1)]
    assert all(len(d["embedding"]) == 64 for d in body["data"])
    assert body["usage"]["prompt_tokens"] > 0 and body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"]
    assert floats.headers["x-atrium-model"] == "embed-3"
    decoded = np.frombuffer(base64.b64decode(packed.json()["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, body["data"][0]["embedding"], atol=1e-6)
    vector = np.asarray(short.json()["data"][0]["embedding"])
    assert vector.shape == (16,) and abs(np.linalg.norm(vector) - 1) < 1e-5
    first = np.asarray(body["data"][0]["embedding"][:16])
    assert np.allclose(vector, first / np.linalg.norm(first), atol=1e-5)


async def test_embedding_limits(server: LiveServer) -> None:
    async with client(server) as http:
        tokens = await http.post("/v1/embeddings", json={"model": "embed-3", "input": [[1, 2, 3]]})
        too_many = await http.post("/v1/embeddings", json={"model": "embed-3", "input": ["a"] * 2049})
        empty = await http.post("/v1/embeddings", json={"model": "embed-3", "input": ""})
        fixed = await http.post("/v1/embeddings", json={"model": "embed-plain", "input": "a", "dimensions": 16})
        wider = await http.post("/v1/embeddings", json={"model": "embed-3", "input": "a", "dimensions": 128})
        unknown = await http.post("/v1/embeddings", json={"model": "nope", "input": "a"})
        chat_model = await http.post("/v1/embeddings", json={"model": "gpt-test", "input": "a"})
    assert "Token-array" in assert_openai_error(tokens, 400, "unsupported_value", "invalid_request_error")["message"]
    assert_openai_error(too_many, 400, "invalid_value", "invalid_request_error")
    assert_openai_error(empty, 400, "invalid_value", "invalid_request_error")
    assert_openai_error(fixed, 400, "unsupported_parameter", "invalid_request_error")
    assert_openai_error(wider, 400, "invalid_value", "invalid_request_error")
    assert_openai_error(unknown, 404, "model_not_found", "invalid_request_error")
    assert_openai_error(chat_model, 400, "model_not_supported", "invalid_request_error")


async def test_models(server: LiveServer) -> None:
    async with client(server) as http:
        listed = (await http.get("/v1/models")).json()
        alias = await http.get("/v1/models/gpt-alias")
        route = await http.get("/v1/models/resilient")
        missing = await http.get("/v1/models/nope")
    assert listed["object"] == "list"
    by_id = {m["id"]: m for m in listed["data"]}
    assert {"gpt-test", "gpt-alias", "claude-test", "embed-3", "resilient"} <= set(by_id)
    assert all(m["object"] == "model" and isinstance(m["created"], int) for m in listed["data"])
    assert by_id["gpt-test"]["owned_by"] == "up" and by_id["claude-test"]["owned_by"] == "claude"
    assert by_id["gpt-alias"]["alias_of"] == "gpt-test"
    assert by_id["resilient"]["owned_by"] == "atrium-route"
    assert alias.json() == by_id["gpt-alias"] and route.json()["owned_by"] == "atrium-route"
    assert_openai_error(missing, 404, "model_not_found", "invalid_request_error")


async def test_tenant_policy_hides_models(tmp_path: Path, upstream: FaultUpstream) -> None:
    async with compat_server(tmp_path / "data", upstream) as live:
        org_id = await _admin_org(live)
    policy = {"tenants": {org_id: {"allowed_models": ["gpt-test"]}}}
    async with compat_server(tmp_path / "data", upstream, gateway=policy) as live, client(live) as http:
        ids = {m["id"] for m in (await http.get("/v1/models")).json()["data"]}
        refused = await http.post("/v1/chat/completions", json=chat("claude-test"))
        hidden = await http.get("/v1/models/claude-test")
    assert ids == {"gpt-test", "gpt-alias", "resilient"}  # a route shows when one of its models is allowed
    assert_openai_error(refused, 403, "model_not_allowed", "permission_error")
    assert_openai_error(hidden, 404, "model_not_found", "invalid_request_error")


async def _admin_org(live: LiveServer) -> str:
    from atrium.store.models import Organization

    async with live.services.db.system_session() as session:
        return str(await session.scalar(select(Organization.id)))


async def test_rate_limited_caller_gets_openai_shape_and_retry_after(tmp_path: Path, upstream: FaultUpstream) -> None:
    async with compat_server(tmp_path / "data", upstream, rate_limits={"key_requests_per_minute": 1}) as live, \
            client(live) as http:
        first = await http.post("/v1/chat/completions", json=chat())
        second = await http.post("/v1/chat/completions", json=chat())
    assert first.status_code == 200
    assert_openai_error(second, 429, "rate_limit_exceeded", "rate_limit_error")
    assert int(second.headers["retry-after"]) >= 1
