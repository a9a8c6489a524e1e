"""The start-up lock (store/startup.py) on both databases: holders take turns, and four processes' worth of
first starts at once on a fresh database make one admin organisation (each with its own engine, as separate
processes would)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select

from atrium.accounts.bootstrap import ensure_admin
from atrium.container import migrate
from atrium.store.engine import temporary_database
from atrium.store.models import ApiKey, Organization
from atrium.store.startup import startup_lock
from tests.conftest import ADMIN_KEY, make_settings
from tests.postgres_fixtures import PostgresServer

pytestmark = pytest.mark.integration


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'data' / 'atrium.db'}"
    postgres: PostgresServer = request.getfixturevalue("postgres")
    return postgres.create_database()


async def test_holders_take_turns(database_url: str) -> None:
    inside: list[int] = []
    overlaps = 0

    async def hold(number: int) -> None:
        nonlocal overlaps
        async with startup_lock(database_url):
            overlaps += bool(inside)
            inside.append(number)
            await asyncio.sleep(0.2)
            inside.remove(number)

    await asyncio.gather(*(hold(n) for n in range(3)))
    assert overlaps == 0


async def test_first_starts_at_once_make_one_admin(tmp_path: Path, database_url: str) -> None:
    settings = await asyncio.to_thread(make_settings, tmp_path / "data", database_url=database_url)
    await asyncio.gather(*(migrate(settings) for _ in range(3)))  # migrations at once, too

    async def first_start() -> None:
        async with temporary_database(database_url) as db, startup_lock(database_url):
            await ensure_admin(db, preset_key=ADMIN_KEY)

    await asyncio.gather(*(first_start() for _ in range(4)))
    async with temporary_database(database_url) as db, db.system_session() as session:
        assert await session.scalar(select(func.count()).select_from(Organization)) == 1
        assert await session.scalar(select(func.count()).select_from(ApiKey)) == 1
