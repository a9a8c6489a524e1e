"""Helpers for tests of the assembled gateway: an app whose catalogue points at a fault-injecting
upstream, and direct calls into the gateway's full stack."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from atrium.gateway.ports import CallContext, ChatEvent, ChatMessage, ChatRequest
from atrium.store.models import Organization
from tests.conftest import RunningApp, make_settings, run_app
from tests.fault_upstream import FaultUpstream


@pytest.fixture
async def upstream() -> AsyncIterator[FaultUpstream]:
    async with FaultUpstream() as server:
        yield server


def gateway_config(upstream: FaultUpstream, **extra: Any) -> dict[str, Any]:
    up = {"kind": "openai", "base_url": upstream.base_url, "api_key": "sk-upstream-secret-0123456789"}
    models = {
        "flaky": {"provider": "up", "model": "status-503"},
        "good": {"provider": "up", "model": "ok", "input_price_per_1m": 1.0, "output_price_per_1m": 2.0},
        "cutter": {"provider": "up", "model": "cut-chunked"},
        "onprem": {"provider": "here", "model": "fake", "local": True},
    }
    config: dict[str, Any] = {
        "providers": {"up": up, "here": {"kind": "fake", "fake_answer": "Answered on premises."}},
        "models": models,
        "routes": {"resilient": {"models": ["flaky", "good"]}, "cut": {"models": ["cutter", "good"]},
                   "anywhere": {"models": ["good", "onprem"]}},
        "default_model": "good",
        "retry": {"attempts": 2, "initial_delay_s": 0.01, "max_delay_s": 0.02, "jitter_s": 0.0},
        "breaker": {"failure_threshold": 3, "reset_timeout_s": 60},
    }
    config.update(extra)
    return config


async def app_for(tmp_path: Path, upstream: FaultUpstream, **settings: Any) -> Any:
    gateway = settings.pop("gateway", gateway_config(upstream))
    # Settings resolve paths (blocking calls): built off the event loop.
    built = await asyncio.to_thread(make_settings, tmp_path / "data", gateway=gateway, **settings)
    return run_app(built, configured=True)


def ask(model: str, text: str = "Say something.", *, org: str, cache: bool = False) -> ChatRequest:
    return ChatRequest(messages=(ChatMessage("user", text),), model=model,
                       context=CallContext(org_id=org, endpoint="/test", cache=cache))


async def collect(running: RunningApp, request: ChatRequest) -> list[ChatEvent]:
    return [event async for event in running.services.gateway.chat.stream(request)]


async def org_of(running: RunningApp) -> str:
    async with running.services.db.system_session() as session:
        return str(await session.scalar(select(Organization.id)))


