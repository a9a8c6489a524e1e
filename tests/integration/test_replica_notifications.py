"""Two API instances sharing one database and one Redis: documents uploaded to one are searchable on the
other at once, because the change is announced over Redis (the periodic check is set to a minute here)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from atrium.settings import Settings
from tests.api.helpers import ingest
from tests.conftest import ADMIN_KEY, make_settings, start_app

pytestmark = pytest.mark.integration


@pytest.fixture
def shared(tmp_path: Path, redis_url: str) -> tuple[Settings, Settings]:
    database = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    slow_poll = {"reconcile_interval_s": 60}
    return (make_settings(tmp_path / "a", database_url=database, redis_url=redis_url, knowledge=slow_poll),
            make_settings(tmp_path / "b", database_url=database, redis_url=redis_url, knowledge=slow_poll))


@pytest.fixture
async def two_replicas(shared: tuple[Settings, Settings]) -> AsyncIterator[list[httpx.AsyncClient]]:
    started = [await start_app(settings) for settings in shared]
    clients = [httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://atrium.test",
                                 headers={"Authorization": f"Bearer {ADMIN_KEY}"}) for app, _ in started]
    try:
        yield clients
    finally:
        for client in clients:
            await client.aclose()
        for _, lifespan in started:
            await lifespan.__aexit__(None, None, None)


async def test_a_change_on_one_replica_reaches_the_other_through_redis(two_replicas: list[httpx.AsyncClient]) -> None:
    first, second = two_replicas
    await ingest(first)
    for _ in range(100):
        response = await second.post("/api/v1/search/semantic", json={"query": "refunds", "mode": "vector"})
        if response.json()["results"]:
            break
        await asyncio.sleep(0.05)
    results = response.json()["results"]
    assert results and results[0]["source"] == "billing.md"
