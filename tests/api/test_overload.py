"""Overload: when every database connection stays busy past ``database.pool_timeout_s``, a request is
refused with a typed ``503 overloaded`` and ``Retry-After`` (never an untyped 500), nothing of it is
stored, and the same request succeeds once connections are free again."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import TimeoutError as PoolTimeout

from atrium.store.models import Message
from tests.conftest import make_settings, run_app


async def test_a_request_past_the_pool_wait_is_a_typed_503_and_stores_nothing(tmp_path: Path) -> None:
    settings = await asyncio.to_thread(make_settings, tmp_path / "data", database={"pool_timeout_s": 0.2})
    async with run_app(settings) as running:
        client, engine = running.client, running.services.db.engine
        assert (await client.get("/api/v1/conversations")).status_code == 200  # the key is known (and cached)
        async with AsyncExitStack() as held:
            while True:  # take every connection the pool will give
                try:
                    await held.enter_async_context(engine.connect())
                except PoolTimeout:
                    break
            refused = await client.post("/api/v1/chat/ask", json={"message": "Anyone there?", "stream": False})
            assert refused.status_code == 503, refused.text
            error = refused.json()["error"]
            assert error["code"] == "overloaded" and error["request_id"] and "retry" in error["message"]
            assert refused.headers["retry-after"] == "2"
        async with running.services.db.system_session() as session:
            assert await session.scalar(select(func.count()).select_from(Message)) == 0
        answered = await client.post("/api/v1/chat/ask", json={"message": "Anyone there?", "stream": False})
        assert answered.status_code == 200, answered.text
