"""The HTTP edge: auth, typed errors with request ids, size and shape limits, health and readiness."""

from __future__ import annotations

import anyio
import httpx

from tests.conftest import RunningApp


def assert_typed_error(response: httpx.Response, status: int, code: str) -> dict[str, str]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    return error  # type: ignore[no-any-return]


async def test_health_needs_no_key_and_ready_reports_checks(running: RunningApp) -> None:
    anonymous = httpx.AsyncClient(transport=running.client._transport, base_url="http://atrium.test")
    assert (await anonymous.get("/health")).json() == {"status": "ok"}
    ready = await anonymous.get("/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"database": True, "index": True, "embedder": True, "chat_model": True}


async def test_api_refuses_missing_and_wrong_keys(running: RunningApp) -> None:
    anonymous = httpx.AsyncClient(transport=running.client._transport, base_url="http://atrium.test")
    missing = await anonymous.post("/api/v1/search/semantic", json={"query": "x"})
    assert_typed_error(missing, 401, "unauthorized")
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = await anonymous.post("/api/v1/search/semantic", json={"query": "x"},
                                 headers={"Authorization": "Bearer atr_not_a_real_key_000000000000000000"})
    assert_typed_error(wrong, 401, "unauthorized")
    ok = await running.client.post("/api/v1/search/semantic", json={"query": "x"})
    assert ok.status_code == 200


async def test_request_id_is_echoed_when_sane_and_replaced_when_not(running: RunningApp) -> None:
    kept = await running.client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert kept.headers["x-request-id"] == "abc-123"
    replaced = await running.client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert replaced.headers["x-request-id"] != "bad id\twith spaces"
    assert len(replaced.headers["x-request-id"]) == 32


async def test_shape_errors_are_typed(running: RunningApp) -> None:
    not_json = await running.client.post("/api/v1/chat/ask", content=b"{not json",
                                         headers={"content-type": "application/json"})
    assert_typed_error(not_json, 422, "invalid_request")
    missing_field = await running.client.post("/api/v1/chat/ask", json={})
    assert "message" in assert_typed_error(missing_field, 422, "invalid_request")["message"]
    extra_field = await running.client.post("/api/v1/chat/ask", json={"message": "hi", "surprise": 1})
    assert_typed_error(extra_field, 422, "invalid_request")
    bad_mode = await running.client.post("/api/v1/search/semantic", json={"query": "x", "mode": "psychic"})
    assert_typed_error(bad_mode, 422, "invalid_request")
    bad_collection = await running.client.post("/api/v1/search/semantic", json={"query": "x", "collection": "../etc"})
    assert_typed_error(bad_collection, 422, "invalid_request")
    blank = await running.client.post("/api/v1/chat/ask", json={"message": "   "})
    assert_typed_error(blank, 422, "invalid_request")
    unknown = await running.client.get("/api/v1/nothing-here")
    assert_typed_error(unknown, 404, "not_found")


async def test_size_limits(running: RunningApp) -> None:
    limits = running.services.settings.limits
    long_message = await running.client.post("/api/v1/chat/ask", json={"message": "a" * (limits.max_message_chars + 1)})
    assert_typed_error(long_message, 413, "payload_too_large")
    huge_body = await running.client.post("/api/v1/chat/ask", content=b"x" * (limits.max_request_bytes + 1),
                                          headers={"content-type": "application/json"})
    assert_typed_error(huge_body, 413, "payload_too_large")

    async def chunks() -> object:
        for _ in range(limits.max_request_bytes // 65536 + 2):
            yield b"y" * 65536

    streamed = await running.client.post("/api/v1/chat/ask", content=chunks(),  # type: ignore[arg-type]
                                         headers={"content-type": "application/json"})
    assert_typed_error(streamed, 413, "payload_too_large")
    too_many = await running.client.post("/api/v1/search/semantic",
                                         json={"query": "x", "limit": limits.max_search_limit + 1})
    assert_typed_error(too_many, 422, "invalid_request")


async def test_path_ids_offsets_and_vendor_fields_are_bounded(running: RunningApp) -> None:
    long_id = "a" * 65
    for path in (f"/api/v1/conversations/{long_id}", f"/api/v1/documents/{long_id}", f"/api/v1/jobs/{long_id}",
                 f"/api/v1/query/{long_id}", f"/api/v1/conversations/{long_id}/messages"):
        assert_typed_error(await running.client.get(path), 422, "invalid_request")
    for path in ("/api/v1/conversations", "/api/v1/documents"):
        assert_typed_error(await running.client.get(path, params={"offset": 1_000_001}), 422, "invalid_request")
    hello = [{"role": "user", "content": "hi"}]
    long_stop = await running.client.post("/v1/chat/completions",
                                          json={"model": "local", "messages": hello, "stop": ["x" * 1001]})
    assert long_stop.status_code == 400 and long_stop.json()["error"]["type"] == "invalid_request_error"
    tool = {"type": "function", "function": {"name": "f", "description": "d" * 10_001}}
    long_tool = await running.client.post("/v1/chat/completions",
                                          json={"model": "local", "messages": hello, "tools": [tool]})
    assert long_tool.status_code == 400
    long_sequence = await running.client.post("/v1/messages", json={
        "model": "local", "max_tokens": 5, "messages": hello, "stop_sequences": ["y" * 1001]})
    assert long_sequence.status_code == 400 and long_sequence.json()["type"] == "error"


async def test_upload_rejects_unsupported_and_binary_files(running: RunningApp) -> None:
    exe = await running.client.post("/api/v1/documents", files=[("files", ("tool.exe", b"MZ\x00\x00", "x/y"))])
    assert_typed_error(exe, 422, "unsupported_file_type")
    binary = await running.client.post("/api/v1/documents",
                                       files=[("files", ("notes.txt", bytes(range(256)) * 4, "text/plain"))])
    assert_typed_error(binary, 422, "unreadable_file")
    leftovers = await anyio.to_thread.run_sync(lambda: list(running.services.settings.uploads_dir.glob("*/*")))
    assert leftovers == [], "refused uploads must leave no files behind"
