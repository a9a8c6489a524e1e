"""A job's end reaches its owner's WebSocket as a ``job`` event, whatever the end: succeeded (also
tests/api/test_ws_realtime.py), failed for good, and cancelled while queued. Real sockets: uvicorn on
loopback and the ``websockets`` client; another organisation's socket gets none of it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from atrium.accounts.ownership import Owner
from atrium.app import create_app
from atrium.gateway.providers.fake import FakeChatModel
from atrium.store.models import Job
from tests.api.helpers import upload, wait_job
from tests.api.test_ws_api import AUTH, ready, socket
from tests.api.test_ws_realtime import as_key, next_of, none_of
from tests.conftest import LiveServer, free_port, make_settings
from tests.tenancy_helpers import create_tenant


@contextlib.asynccontextmanager
async def live(tmp_path: Path, **overrides: Any) -> AsyncIterator[tuple[LiveServer, httpx.AsyncClient]]:
    settings = await asyncio.to_thread(make_settings, tmp_path / "data", **overrides)
    app = create_app(settings, chat_model=FakeChatModel())
    async with LiveServer(app, free_port()) as server, httpx.AsyncClient(base_url=server.url, headers=AUTH) as client:
        yield server, client


async def ended(ws: Any, job_id: str) -> dict[str, Any]:
    """The job's events on ``ws`` up to its end; the last one."""
    while True:
        event = (await next_of(ws, "job"))["job"]
        if event["id"] == job_id and event["status"] in ("succeeded", "failed", "cancelled"):
            return event  # type: ignore[no-any-return]


async def test_success_and_failure_for_good_reach_the_owners_socket(tmp_path: Path) -> None:
    async with live(tmp_path, jobs={"max_attempts": 1}) as (server, client):
        other = await create_tenant(server.services.db, "Other")
        async with socket(server, additional_headers=AUTH) as mine, socket(server, **as_key(other.raw_key)) as theirs:
            await ready(mine)
            await ready(theirs)
            job_id = (await upload(client, {"a.md": "# A\n\nAlpha notes."}))["job_id"]
            done = await ended(mine, job_id)
            assert done["status"] == "succeeded" and done["progress"] == 1.0 and done["kind"] == "ingest"
            async with server.services.db.system_session() as session:
                row = await session.get(Job, job_id)
                assert row is not None
                org_id, owner = row.org_id, Owner(row.user_id, row.api_key_id)
            # A job whose handler raises (its payload names no folder): one attempt, then failed for good.
            broken = await server.services.jobs.enqueue(org_id, "ingest", {"collection": "docs", "files": []},
                                                        owner=owner)
            failed = await ended(mine, broken)
            assert failed["status"] == "failed" and "gave up" in failed["error"]
            assert (await wait_job(client, broken))["status"] == "failed"
            await none_of(theirs, "job")


async def test_a_cancelled_job_reaches_the_owners_socket(tmp_path: Path) -> None:
    async with live(tmp_path, jobs={"run_in_api": False}) as (server, client), \
            socket(server, additional_headers=AUTH) as mine:
        await ready(mine)
        job_id = (await upload(client, {"a.md": "# A\n\nAlpha notes."}))["job_id"]
        assert (await client.post(f"/api/v1/jobs/{job_id}/cancel")).json()["status"] == "cancelled"
        cancelled = await ended(mine, job_id)
        assert cancelled["status"] == "cancelled"
