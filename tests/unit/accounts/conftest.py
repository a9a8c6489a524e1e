"""A migrated SQLite database with two organisations and a user in each, for the accounts unit tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from atrium.store.engine import Database, build_engine
from atrium.store.migrate import upgrade
from atrium.store.models import Organization, User


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'accounts.db'}"
    await anyio.to_thread.run_sync(upgrade, url)
    database = Database(build_engine(url))
    async with database.system_session() as session:
        session.add_all([Organization(id="org-a", name="a"), Organization(id="org-b", name="b")])
        await session.flush()
        session.add_all([User(id="user-a", org_id="org-a", email="a@example.com"),
                         User(id="user-b", org_id="org-b", email="b@example.com")])
    yield database
    await database.dispose()
