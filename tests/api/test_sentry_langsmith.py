"""Optional reporting off the machine, against local receivers (no network): Sentry gets a crash as an
event with every credential redacted and the request's id; LangSmith gets the assistant's graph run, its
inputs redacted, only when ``telemetry.langsmith.enabled``, never because the environment asks for it."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sentry_sdk
from langsmith import utils as langsmith_utils

from atrium.app import create_app
from tests.conftest import ADMIN_KEY, LiveServer, free_port, make_settings
from tests.receivers import Receiver

VENDOR_KEY = "sk-live-" + "Zq8" * 8  # a credential shape in user text
CRASH_SECRET = "sk-proj-crashsecret0123456789"


async def crash() -> None:
    raise RuntimeError(f"crashed holding {CRASH_SECRET} and Authorization: Bearer opaque-token-77412")


def envelope_items(body: bytes) -> list[tuple[dict[str, Any], Any]]:
    """A Sentry envelope: a header line, then (item header, payload) pairs."""
    lines = body.split(b"\n")
    items = []
    index = 1
    while index + 1 < len(lines):
        header = json.loads(lines[index])
        payload = lines[index + 1]
        items.append((header, json.loads(payload) if header.get("type") == "event" else payload))
        index += 2
    return items


@pytest.fixture
def sentry_cleared() -> Iterator[None]:
    yield
    if sentry_sdk.get_client().is_active():  # never left installed for the next test
        sentry_sdk.get_global_scope().set_client(None)


async def test_sentry_reports_a_crash_redacted_with_its_request_id(tmp_path: Path, sentry_cleared: None) -> None:
    async with Receiver() as receiver:
        dsn = f"http://publickey0123@127.0.0.1:{receiver.port}/42"
        settings = await asyncio.to_thread(make_settings, tmp_path / "data",
                                           telemetry={"sentry": {"dsn": dsn, "environment": "test"}})
        app = create_app(settings)
        app.add_api_route("/crash", crash)
        async with LiveServer(app, free_port()) as server, \
                httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as http:
            assert sentry_sdk.get_client().is_active()
            crashed = await http.get("/crash", params={"token": "query-token-99812"})
            assert crashed.status_code == 500
        assert not sentry_sdk.get_client().is_active()  # uninstalled at shutdown, after sending
    envelopes = receiver.to("/api/42/envelope/")
    events = [payload for request in envelopes for header, payload in envelope_items(request.body)
              if header.get("type") == "event"]
    [event] = [e for e in events if e.get("exception")]
    [exception] = event["exception"]["values"]
    assert exception["type"] == "RuntimeError" and "[REDACTED]" in exception["value"]
    assert event["tags"]["request_id"] == crashed.headers["x-request-id"]
    assert event["environment"] == "test" and event["logger"] == "atrium.http.middleware"
    raw = b"".join(request.body for request in envelopes).decode()
    for secret in (CRASH_SECRET, "opaque-token-77412", "query-token-99812", ADMIN_KEY):
        assert secret not in raw
    assert envelopes[0].headers["x-sentry-auth"].count("sentry_key=publickey0123") == 1


async def test_sentry_is_not_installed_without_a_dsn(tmp_path: Path) -> None:
    settings = await asyncio.to_thread(make_settings, tmp_path / "data")
    async with LiveServer(create_app(settings), free_port()) as server:
        assert server.services.telemetry.sentry is None and not sentry_sdk.get_client().is_active()


@pytest.fixture
def langsmith_env_cache() -> Iterator[None]:
    """LangSmith caches what it read of the environment: cleared around the test."""
    langsmith_utils.get_env_var.cache_clear()
    yield
    langsmith_utils.get_env_var.cache_clear()


async def ask(http: httpx.AsyncClient) -> None:
    answered = await http.post("/api/v1/chat/ask", json={"message": f"What does {VENDOR_KEY} open?"})
    assert answered.status_code == 200, answered.text


@pytest.mark.parametrize("told_by", ["settings", "environment"])
async def test_langsmith_gets_the_assistant_run_when_enabled(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, langsmith_env_cache: None, told_by: str) -> None:
    async with Receiver(answers={"/info": {"version": "0.test"}}) as receiver:
        where = {"endpoint": receiver.url, "api_key": "lsv2-test-key-0123456789", "project": "atrium-t"}
        if told_by == "environment":  # LangSmith's own variables pass through to its client
            for name, value in where.items():
                monkeypatch.setenv(f"LANGSMITH_{name.upper()}", value)
            where = {}
        settings = await asyncio.to_thread(make_settings, tmp_path / "data",
                                           telemetry={"langsmith": {"enabled": True, **where}})
        async with LiveServer(create_app(settings), free_port()) as server, \
                httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                                  timeout=30) as http:
            await ask(http)
        # the client's queue was flushed at shutdown
    posted = [r for r in receiver.requests if r.method == "POST" and "/runs" in r.path]
    assert posted, [(r.method, r.path) for r in receiver.requests]
    assert all(r.headers.get("x-api-key") == "lsv2-test-key-0123456789" for r in posted)
    sent = b"".join(r.body for r in posted).decode("utf-8", "replace")
    runs = [json.loads(part) for part in re.findall(r"\r\n\r\n(\{.*?\})\r\n--", sent)]
    heads = {run["id"]: run for run in runs if "run_type" in run}
    [root] = [run for run in heads.values() if "parent_run_id" not in run]
    assert (root["name"], root["session_name"]) == ("assistant", "atrium-t")  # the graph, in the project
    # the chat use case runs the assistant in one node (agents/graph.py: build_turn_graph)
    assert [run["name"] for run in heads.values() if run.get("parent_run_id") == root["id"]] == ["turn"]
    assert "What does [REDACTED] open?" in sent  # the question went, redacted before it left
    assert VENDOR_KEY not in sent and ADMIN_KEY not in sent


async def test_langsmith_stays_off_even_when_the_environment_turns_tracing_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, langsmith_env_cache: None) -> None:
    async with Receiver(answers={"/info": {"version": "0.test"}}) as receiver:
        for name, value in {"LANGSMITH_TRACING": "true", "LANGSMITH_ENDPOINT": receiver.url,
                            "LANGSMITH_API_KEY": "lsv2-env-key-0123456789"}.items():
            monkeypatch.setenv(name, value)
        settings = await asyncio.to_thread(make_settings, tmp_path / "data")
        assert settings.telemetry.langsmith.enabled is False
        async with LiveServer(create_app(settings), free_port()) as server, \
                httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                                  timeout=30) as http:
            await ask(http)
        assert langsmith_utils.tracing_is_enabled() is True  # the environment did ask for it
    assert receiver.requests == []
