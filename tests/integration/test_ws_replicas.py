"""``WS /ws`` across two replicas (two apps on loopback sharing one database and one Redis): an event
produced on one reaches a socket on the other, and presence (join, list, leave) spans both."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from atrium.app import create_app
from atrium.gateway.providers.fake import FakeChatModel
from tests.api.test_ws_api import AUTH, ready, socket
from tests.api.test_ws_realtime import as_key, colleague, next_of
from tests.conftest import LiveServer, free_port, make_settings

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def replica(folder: Path, database: str, redis_url: str) -> AsyncIterator[tuple[LiveServer, httpx.AsyncClient]]:
    settings = await asyncio.to_thread(make_settings, folder, database_url=database, redis_url=redis_url,
                                       knowledge={"reconcile_interval_s": 60})
    app = create_app(settings, chat_model=FakeChatModel())
    async with LiveServer(app, free_port()) as server, \
            httpx.AsyncClient(base_url=server.url, headers=AUTH) as client:
        yield server, client


async def test_events_and_presence_cross_replicas_through_redis(tmp_path: Path, redis_url: str) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    async with replica(tmp_path / "a", database, redis_url) as (first, client), \
            replica(tmp_path / "b", database, redis_url) as (second, _):
        bea_id, bea_key = await colleague(first, client)
        async with socket(first, additional_headers=AUTH) as here, socket(second, **as_key(bea_key)) as there:
            await ready(here)
            await ready(there)
            joined = await next_of(here, "presence", event="join")  # announced by the other replica
            assert joined["user"] == {"id": bea_id, "name": "Bea"}
            await here.send(json.dumps({"type": "presence", "id": "who"}))
            assert bea_id in {user["id"] for user in (await next_of(here, "presence", id="who"))["users"]}
            shared = await client.post("/api/v1/artifacts", json={
                "kind": "markdown", "title": "Across", "content": {"text": "hi"}, "visibility": "org"})
            assert shared.status_code == 201, shared.text
            event = await next_of(there, "artifact")  # made through the first replica
            assert event["artifact"]["id"] == shared.json()["id"]
            private = await client.post("/api/v1/artifacts", json={
                "kind": "markdown", "title": "Mine", "content": {"text": "hi"}})
            assert (await next_of(here, "artifact"))["artifact"]["id"] == shared.json()["id"]
            assert (await next_of(here, "artifact"))["artifact"]["id"] == private.json()["id"]
            with contextlib.suppress(TimeoutError):  # the private one never reaches the colleague
                while True:
                    seen = json.loads(await asyncio.wait_for(there.recv(), 0.6))
                    assert seen["type"] != "artifact", seen
        # The colleague's socket closed on the second replica: a leave on the first.
        async with socket(first, additional_headers=AUTH) as watcher:
            await ready(watcher)
            async with socket(second, **as_key(bea_key)) as again:
                await ready(again)
                await next_of(watcher, "presence", event="join")
            assert (await next_of(watcher, "presence", event="leave"))["user"]["id"] == bea_id
