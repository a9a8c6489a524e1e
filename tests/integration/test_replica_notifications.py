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


async def test_a_collection_made_private_on_one_replica_is_out_of_reach_on_the_other(
        tmp_path: Path, redis_url: str) -> None:
    """Each replica keeps who may read which collection in memory for ``auth.key_cache_ttl_s`` (a minute
    here): the change must reach the other replica through Redis, not through that memory expiring."""
    database = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    kept = {"key_cache_ttl_s": 60}
    started = [await start_app(make_settings(tmp_path / name, database_url=database, redis_url=redis_url,
                                             knowledge={"reconcile_interval_s": 60}, auth=kept))
               for name in ("a", "b")]
    admin = [httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://atrium.test",
                               headers={"Authorization": f"Bearer {ADMIN_KEY}"}) for app, _ in started]
    try:
        first, second = admin
        made = await first.post("/api/v1/collections", json={"name": "notes", "visibility": "org"})
        assert made.status_code == 201, made.text
        await ingest(first, {"n.md": "# Notes\n\nThe hint is TANGERINE.\n"}, collection="notes")
        user = await first.post("/api/v1/admin/users", json={"email": "m@example.com", "name": "m", "role": "member",
                                                             "password": "a-long-enough-password"})
        key = await first.post("/api/v1/admin/keys", json={"name": "m", "role": "member",
                                                           "user_id": user.json()["id"]})
        member = {"Authorization": f"Bearer {key.json()['key']}"}

        async def member_finds() -> bool:
            found = await second.post("/api/v1/search/semantic", headers=member,
                                      json={"query": "TANGERINE hint", "mode": "keyword"})
            assert found.status_code == 200, found.text
            return any("TANGERINE" in hit["text"] for hit in found.json()["results"])

        assert await member_finds()  # the second replica now keeps the collection as organisation-wide
        assert (await first.patch("/api/v1/collections/notes", json={"visibility": "private"})).status_code == 200
        for _ in range(100):
            if not await member_finds():
                break
            await asyncio.sleep(0.05)
        assert not await member_finds()
    finally:
        for client in admin:
            await client.aclose()
        for _, lifespan in started:
            await lifespan.__aexit__(None, None, None)
