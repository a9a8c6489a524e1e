"""Alembic environment for SQLite and PostgreSQL.

SQLite migrates through the standard library driver (plain blocking code, run in a worker thread by the
caller); PostgreSQL through asyncpg on a private event loop, as Alembic's async recipe does.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection

from atrium.store.engine import build_engine, sqlite_pragmas
from atrium.store.models import Base

target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Migrations see and change every tenant's rows: FORCE ROW LEVEL SECURITY applies to a table's
        # owner too, so without the system scope a data migration run by a non-superuser owner would
        # silently touch nothing.
        connection.execute(text("SELECT set_config('app.bypass_rls', 'on', true)"))
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_sqlite(url: str) -> None:
    engine = create_engine(url.replace("sqlite+aiosqlite", "sqlite+pysqlite", 1))
    event.listen(engine, "connect", sqlite_pragmas)
    try:
        with engine.connect() as connection:
            _run(connection)
            connection.commit()
    finally:
        engine.dispose()


async def _run_async(url: str) -> None:
    engine = build_engine(url)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


url = str(context.config.attributes.get("database_url") or context.config.get_main_option("sqlalchemy.url"))
if context.is_offline_mode():
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif url.startswith("sqlite"):
    _run_sqlite(url)
else:
    asyncio.run(_run_async(url))
