"""The server the vendor-compatible API tests talk to: Atrium on a real loopback port (uvicorn), its gateway
configured with OpenAI- and Anthropic-format providers pointing at the fault-injecting upstream
(``tests/fault_upstream.py``); module-scoped ``upstream``/``server`` fixtures (import them) and helpers
that read SSE bodies exactly as sent.

Catalogue (the upstream's behaviour is picked by the upstream model name):

``gpt-test`` (alias ``gpt-alias``)   OpenAI format, answers :data:`DEFAULT_ANSWER` word by word
``gpt-tool``                         OpenAI format, one streamed tool call
``gpt-cut``                          OpenAI format, two tokens then the connection closes
``gpt-503``                          OpenAI format, always 503 (its own provider: its breaker is its own)
``gpt-429``                          OpenAI format, always 429 with ``Retry-After: 1``
``gpt-slow``                         OpenAI format, silent for 3 s (longer than the attempt timeout)
``claude-test`` / ``claude-tool``    Anthropic format, the answer / a text block then a tool call
``claude-cut``                       Anthropic format, two tokens then the connection closes
``embed-3``                          OpenAI embeddings (``text-embedding-3-small`` at 64 dimensions)
``embed-plain``                      OpenAI embeddings of a model that cannot be shortened
route ``resilient``                  ``gpt-503`` then ``gpt-test``
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from atrium.app import create_app
from tests.conftest import ADMIN_KEY, LiveServer, free_port, make_settings
from tests.fault_upstream import DEFAULT_ANSWER, TOOL_ARGUMENTS, FaultUpstream

__all__ = ["ADMIN_KEY", "AUTH", "DEFAULT_ANSWER", "TOOL_ARGUMENTS", "UPSTREAM_KEY", "WEATHER_TOOL", "client",
           "compat_server", "data_frames", "server", "sse_events", "upstream"]

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
UPSTREAM_KEY = "sk-upstream0123456789abcdefSECRET"

WEATHER_TOOL: Any = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"type": "string"}},
                   "required": ["city"]}}}


def gateway_config(upstream: FaultUpstream) -> dict[str, Any]:
    openai = {"kind": "openai", "base_url": upstream.base_url, "api_key": UPSTREAM_KEY}
    return {
        "providers": {
            "up": openai,
            "down": dict(openai),
            "limited": dict(openai),
            "slow": dict(openai),
            "cutting": dict(openai),
            "claude": {"kind": "anthropic", "base_url": upstream.root_url, "api_key": UPSTREAM_KEY},
            "claude-cutting": {"kind": "anthropic", "base_url": upstream.root_url, "api_key": UPSTREAM_KEY},
        },
        "models": {
            "gpt-test": {"provider": "up", "model": "ok", "aliases": ["gpt-alias"]},
            "gpt-tool": {"provider": "up", "model": "tool", "capabilities": ["tools"]},
            "gpt-cut": {"provider": "cutting", "model": "cut-chunked"},
            "gpt-503": {"provider": "down", "model": "status-503"},
            "gpt-429": {"provider": "limited", "model": "status-429"},
            "gpt-slow": {"provider": "slow", "model": "slow-3000"},
            "claude-test": {"provider": "claude", "model": "ok"},
            "claude-tool": {"provider": "claude", "model": "tool"},
            "claude-cut": {"provider": "claude-cutting", "model": "cut-chunked"},
            "embed-3": {"provider": "up", "model": "text-embedding-3-small", "kind": "embedding",
                        "dimensions": 64},
            "embed-plain": {"provider": "up", "model": "plain-embedder", "kind": "embedding", "dimensions": 64},
        },
        "routes": {"resilient": {"models": ["gpt-503", "gpt-test"]}},
        "default_model": "gpt-test",
        "retry": {"attempts": 1, "initial_delay_s": 0, "jitter_s": 0},
        "breaker": {"failure_threshold": 1000},
        "attempt_timeout_s": 1.0,
    }


@pytest.fixture(scope="module")
async def upstream() -> AsyncIterator[FaultUpstream]:
    async with FaultUpstream() as fault_upstream:
        yield fault_upstream


@pytest.fixture(scope="module")
async def server(upstream: FaultUpstream, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[LiveServer]:
    """One server per test module (starting one takes a while); tests must not change its state."""
    async with compat_server(tmp_path_factory.mktemp("compat") / "data", upstream) as live:
        yield live


@asynccontextmanager
async def compat_server(data_dir: Path, upstream: FaultUpstream, **overrides: Any) -> AsyncIterator[LiveServer]:
    """Atrium with :func:`gateway_config` (models built from configuration, nothing injected)."""
    config = gateway_config(upstream)
    if "gateway" in overrides:
        config.update(overrides.pop("gateway"))
    # Settings resolve paths (a blocking call): off the event loop.
    settings = await asyncio.to_thread(make_settings, data_dir, gateway=config, **overrides)
    async with LiveServer(create_app(settings), free_port()) as server:
        yield server


def data_frames(body: str) -> list[str]:
    """The ``data:`` payloads of an OpenAI-style stream, in order; asserts OpenAI's framing (one ``data:``
    line per event, events separated by a blank line, nothing else)."""
    assert body.endswith("\n\n"), body[-200:]
    frames = []
    for block in body[:-2].split("\n\n"):
        assert block.startswith("data: ") and "\n" not in block, block
        frames.append(block.removeprefix("data: "))
    return frames


def sse_events(body: str) -> list[tuple[str, dict[str, Any]]]:
    """``(event, data)`` of an Anthropic-style stream; asserts every event has exactly one ``event:`` and
    one ``data:`` line and that ``data.type`` repeats the event name."""
    assert body.endswith("\n\n"), body[-200:]
    events = []
    for block in body[:-2].split("\n\n"):
        lines = block.split("\n")
        assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        name, data = lines[0].removeprefix("event: "), json.loads(lines[1].removeprefix("data: "))
        assert data["type"] == name, block
        events.append((name, data))
    return events


def client(server: LiveServer, **headers: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, headers={**AUTH, **headers}, timeout=30)
