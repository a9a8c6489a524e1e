"""Retention and erasure of agent threads, through the official ``langgraph-sdk`` client over real HTTP,
checked in the raw checkpoint tables on SQLite and on PostgreSQL (as a normal role under RLS): a thread
keeps its last N checkpoints (their writes and blobs too), deleting a thread leaves no row of it anywhere,
and the TTL sweep erases idle threads only."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from blockbuster import BlockBuster
from langgraph_sdk import get_client
from langgraph_sdk.errors import NotFoundError
from sqlalchemy import func, select

from atrium.app import create_app
from atrium.gateway.providers.fake import NO_ANSWER, FakeChatModel
from atrium.settings import Settings
from atrium.store.models import AgentRun, AgentThread
from tests.agent_tables import checkpoint_rows
from tests.api.authz_helpers import BACKENDS, backend_settings
from tests.conftest import ADMIN_KEY, LiveServer, free_port, make_settings

KEEP = 3


@pytest.fixture(scope="module", params=BACKENDS)
async def any_backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    backend: str = request.param
    return await backend_settings(request, tmp_path_factory.mktemp(f"retention-{backend}") / "data", backend,
                                  agents={"checkpoints_keep_last": KEEP, "thread_ttl": 3600})


@contextlib.asynccontextmanager
async def _served(settings: Settings, guard: BlockBuster) -> AsyncIterator[LiveServer]:
    server = LiveServer(create_app(settings, chat_model=FakeChatModel()), free_port())
    guard.deactivate()  # start-up outside the guard (asyncpg's blocking ~/.pgpass lookup)
    try:
        await server.__aenter__()
    finally:
        guard.activate()
    try:
        yield server
    finally:
        await server.__aexit__()


def _say(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


async def test_a_thread_keeps_its_last_checkpoints(any_backend: Settings, blockbuster: BlockBuster) -> None:
    async with _served(any_backend, blockbuster) as server, get_client(url=server.url, api_key=ADMIN_KEY) as client:
        thread = await client.threads.create()
        tid = thread["thread_id"]
        for turn in range(4):
            await client.runs.wait(tid, "echo", input=_say(f"turn {turn}"))
        history = await client.threads.get_history(tid, limit=50)
        checkpoints = await checkpoint_rows(any_backend, "checkpoints", tid)
        writes = await checkpoint_rows(any_backend, "writes", tid)
        blobs = await checkpoint_rows(any_backend, "blobs", tid)
        # The state is whole, and the next run builds on it.
        done: Any = await client.runs.wait(tid, "echo", input=_say("turn 4"))
    assert len(history) == KEEP and len(checkpoints) == KEEP
    kept = {row["checkpoint_id"] for row in checkpoints}
    assert {row["checkpoint_id"] for row in writes} <= kept
    assert history[-1]["parent_checkpoint"] is None  # the oldest kept no longer points at an erased one
    if not any_backend.is_sqlite:  # every blob left is one a kept checkpoint uses
        used = {(channel, str(version)) for row in checkpoints
                for channel, version in row["checkpoint"]["channel_versions"].items()}
        assert blobs and {(row["channel"], row["version"]) for row in blobs} <= used
    assert [m["content"] for m in done["messages"]][-4:] == ["turn 3", NO_ANSWER, "turn 4", NO_ANSWER]
    assert len(done["messages"]) == 10


async def test_deleting_a_thread_leaves_no_row_of_it(any_backend: Settings, blockbuster: BlockBuster) -> None:
    async with _served(any_backend, blockbuster) as server, get_client(url=server.url, api_key=ADMIN_KEY) as client:
        tid = (await client.threads.create())["thread_id"]
        await client.runs.wait(tid, "echo", input=_say("hello"))
        assert await checkpoint_rows(any_backend, "checkpoints", tid)
        assert await checkpoint_rows(any_backend, "writes", tid)
        await client.threads.delete(tid)
        db = server.services.db
        async with db.system_session() as session:
            runs = await session.scalar(select(func.count()).select_from(AgentRun).where(AgentRun.thread_id == tid))
    for kind in ("checkpoints", "writes", "blobs"):
        assert await checkpoint_rows(any_backend, kind, tid) == [], kind
    assert runs == 0


async def test_the_ttl_sweep_erases_idle_threads_only(any_backend: Settings, blockbuster: BlockBuster) -> None:
    async with _served(any_backend, blockbuster) as server, get_client(url=server.url, api_key=ADMIN_KEY) as client:
        old = (await client.threads.create())["thread_id"]
        await client.runs.wait(old, "echo", input=_say("old"))
        agents = server.services.agents
        async with server.services.db.system_session() as session:
            row = await session.get(AgentThread, old)
            assert row is not None
            row.updated_at = datetime.now(UTC) - timedelta(hours=2)
        fresh = (await client.threads.create())["thread_id"]
        await client.runs.wait(fresh, "echo", input=_say("fresh"))
        assert await agents.sweep() == 1
        assert [t["thread_id"] for t in await client.threads.search(limit=100)
                if t["thread_id"] in (old, fresh)] == [fresh]
        assert await checkpoint_rows(any_backend, "checkpoints", old) == []
        assert await checkpoint_rows(any_backend, "checkpoints", fresh)


async def test_the_server_sweeps_on_its_own_and_stops_at_once(tmp_path: Path, blockbuster: BlockBuster) -> None:
    settings = await asyncio.to_thread(make_settings, tmp_path / "data",
                                       agents={"thread_ttl": 0.5, "sweep_interval_s": 0.1})
    async with _served(settings, blockbuster) as server, get_client(url=server.url, api_key=ADMIN_KEY) as client:
        tid = (await client.threads.create())["thread_id"]
        await client.runs.wait(tid, "echo", input=_say("soon gone"))
        for _ in range(50):
            if not await checkpoint_rows(settings, "checkpoints", tid):
                break
            await asyncio.sleep(0.1)
        with pytest.raises(NotFoundError):
            await client.threads.get(tid)
        stopping = asyncio.get_running_loop().time()
    assert asyncio.get_running_loop().time() - stopping < 5  # the sweep task does not hold up shutdown
