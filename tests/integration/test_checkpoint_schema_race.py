"""``PostgresCheckpoints.open`` run by several processes at once on a fresh PostgreSQL database (API processes
and an ``atrium worker`` starting together): every one succeeds and the checkpoint tables end up made once,
under Row-Level Security. Each caller has its own connections, as separate processes would."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from atrium.agents.checkpoints import CHECKPOINT_TABLES, PostgresCheckpoints, psycopg_url
from atrium.store.migrate import upgrade

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("callers", [2, 4])
async def test_concurrent_open_on_a_fresh_database(postgres_url: str, callers: int) -> None:
    await asyncio.to_thread(upgrade, postgres_url)  # Atrium's own tables (the policies name agent_threads)
    opened = await asyncio.gather(*(PostgresCheckpoints.open(postgres_url, postgres_url) for _ in range(callers)),
                                  return_exceptions=True)
    try:
        failures = [result for result in opened if isinstance(result, BaseException)]
        assert not failures, failures
        async with await psycopg.AsyncConnection.connect(psycopg_url(postgres_url)) as conn:
            rows = await (await conn.execute(
                "SELECT relname, relrowsecurity FROM pg_class WHERE relname = ANY(%s) AND relkind = 'r'",
                (list(CHECKPOINT_TABLES),))).fetchall()
        assert sorted(rows) == sorted((table, True) for table in CHECKPOINT_TABLES)
    finally:
        for result in opened:
            if isinstance(result, PostgresCheckpoints):
                await result.aclose()
