"""Reading LangGraph's checkpoint tables raw, as a check that retention and erasure really removed rows:
the SQLite saver's file (``checkpoints``, ``writes``) or PostgreSQL's tables (``checkpoints``,
``checkpoint_writes``, ``checkpoint_blobs``) read as the owner (a superuser: no RLS in the way)."""

from __future__ import annotations

from typing import Any

import aiosqlite
import psycopg
from psycopg.rows import dict_row

from atrium.agents.checkpoints import psycopg_url
from atrium.settings import Settings

SQLITE_TABLES = {"checkpoints": "checkpoints", "writes": "writes"}
POSTGRES_TABLES = {"checkpoints": "checkpoints", "writes": "checkpoint_writes", "blobs": "checkpoint_blobs"}


async def checkpoint_rows(settings: Settings, kind: str, thread_id: str) -> list[dict[str, Any]]:
    """The rows of ``kind`` (``checkpoints``, ``writes``, ``blobs``: PostgreSQL only) of ``thread_id``."""
    if settings.is_sqlite:
        if kind == "blobs":
            return []
        async with aiosqlite.connect(settings.data_dir / "checkpoints.db") as conn:
            conn.row_factory = aiosqlite.Row
            rows = await conn.execute_fetchall(f"SELECT * FROM {SQLITE_TABLES[kind]} WHERE thread_id = ?",
                                               (thread_id,))
            return [dict(row) for row in rows]
    url = psycopg_url(settings.resolved_migration_database_url)
    async with await psycopg.AsyncConnection.connect(url, row_factory=dict_row) as conn:
        found = await conn.execute(f"SELECT * FROM {POSTGRES_TABLES[kind]} WHERE thread_id = %s", (thread_id,))
        return list(await found.fetchall())
