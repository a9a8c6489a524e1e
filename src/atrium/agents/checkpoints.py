"""Where a thread's graph state lives: LangGraph's own checkpointers, opened once at start-up.

``Checkpoints`` is the port: ``for_tenant(org_id)`` lends a LangGraph ``BaseCheckpointSaver`` for work on
behalf of one organisation (a run, a state read), ``delete_thread`` erases a thread's checkpoints, and
``aclose`` releases the connections. Two adapters:

``prune`` keeps a thread's newest checkpoints (``agents/retention.py``).

* ``SqliteCheckpoints`` (embedded default): one ``AsyncSqliteSaver`` on ``<data_dir>/checkpoints.db``,
  shared by every run (threads are scoped by the ``agent_threads`` rows the routes check first).
* ``PostgresCheckpoints`` (scale profile): ``AsyncPostgresSaver`` over a psycopg pool. ``setup()`` runs as
  the migration (owner) role, which also puts the checkpoint tables under Row-Level Security through
  their thread: a checkpoint row is visible only when its ``thread_id`` names an ``agent_threads`` row of
  the organisation in ``app.current_org_id`` (the thread table's own policy decides). Each saver lent by
  ``for_tenant`` sets that organisation on every connection it takes from the pool, so a run of one
  organisation cannot read or write another's checkpoints even by naming its thread. Erasing a thread
  runs after its ``agent_threads`` row is gone (so no run can start on it meanwhile), when the policy no
  longer shows its rows: it deletes them by thread id in a transaction that bypasses RLS, unless a thread
  row of that id belongs to another organisation (thread ids are global, ``threads.create_thread``; the
  caller checked the deleted row was its organisation's).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import anyio
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.engine import make_url

from atrium.agents.retention import prune_postgres, prune_sqlite
from atrium.settings import Settings
from atrium.store.files import private_sqlite_file
from atrium.store.scope import BYPASS_SETTING, TENANT_SETTING
from atrium.store.tenancy import forced_policy_statements

log = logging.getLogger(__name__)

# The tables ``AsyncPostgresSaver.setup()`` makes that hold a thread's data (``checkpoint_migrations``
# holds only the schema version).
CHECKPOINT_TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes")
_SET_TENANT = f"SELECT set_config('{TENANT_SETTING}', %s, false)"
_BYPASS_IN_TRANSACTION = f"SELECT set_config('{BYPASS_SETTING}', 'on', true)"


class Checkpoints(Protocol):
    """The checkpointer port: a LangGraph saver for one organisation's work, thread erasure, closing."""

    def for_tenant(self, org_id: str) -> AbstractAsyncContextManager[BaseCheckpointSaver[Any]]:
        """A saver that reads and writes ``org_id``'s threads (enforced by the database on PostgreSQL)."""
        ...

    async def delete_thread(self, org_id: str, thread_id: str) -> None:
        """Erase every checkpoint of ``thread_id`` (its writes and blobs too), whether or not its thread row
        still exists."""
        ...

    async def prune(self, org_id: str, thread_id: str, keep: int) -> int:
        """Keep ``thread_id``'s newest ``keep`` (>= 1) checkpoints per namespace; how many were erased."""
        ...

    async def aclose(self) -> None: ...


class SqliteCheckpoints:
    """The embedded default: one ``AsyncSqliteSaver`` (its own aiosqlite connection) on a file in the data
    dir, beside Atrium's database rather than in it, so long graph writes never hold its write lock."""

    def __init__(self, saver: AsyncSqliteSaver, stack: AsyncExitStack) -> None:
        self.saver = saver
        self._stack = stack

    @classmethod
    async def open(cls, path: Path) -> SqliteCheckpoints:
        await anyio.to_thread.run_sync(private_sqlite_file, path)  # 0600 like Atrium's own database
        stack = AsyncExitStack()
        saver = await stack.enter_async_context(AsyncSqliteSaver.from_conn_string(str(path)))
        await saver.setup()
        return cls(saver, stack)

    @asynccontextmanager
    async def for_tenant(self, org_id: str) -> AsyncIterator[BaseCheckpointSaver[Any]]:
        yield self.saver

    async def delete_thread(self, org_id: str, thread_id: str) -> None:
        await self.saver.adelete_thread(thread_id)

    async def prune(self, org_id: str, thread_id: str, keep: int) -> int:
        return await prune_sqlite(self.saver, thread_id, keep)

    async def aclose(self) -> None:
        await self._stack.aclose()


class TenantPostgresSaver(AsyncPostgresSaver):
    """An ``AsyncPostgresSaver`` over the shared pool that sets its organisation on each connection it
    takes (``app.current_org_id``, which the checkpoint tables' policy reads). Cheap to make: one per run
    or state read."""

    def __init__(self, pool: AsyncConnectionPool[Any], org_id: str) -> None:
        super().__init__(pool)
        self._pool = pool
        self._org_id = org_id

    @asynccontextmanager
    async def _cursor(self, *, pipeline: bool = False) -> AsyncIterator[Any]:
        # The library's own ``_cursor`` minus its single-connection modes, plus the tenant setting.
        async with self._pool.connection() as conn:
            await conn.execute(_SET_TENANT, (self._org_id,))
            if pipeline and self.supports_pipeline:
                async with conn.pipeline(), conn.cursor(binary=True, row_factory=dict_row) as cur:
                    yield cur
            elif pipeline:
                async with conn.transaction(), conn.cursor(binary=True, row_factory=dict_row) as cur:
                    yield cur
            else:
                async with conn.cursor(binary=True, row_factory=dict_row) as cur:
                    yield cur


def checkpoint_rls_statements(table: str) -> list[str]:
    """Row-Level Security on a checkpoint table through its thread (idempotent; run as the owner)."""
    condition = (f"EXISTS (SELECT 1 FROM agent_threads t WHERE t.id = {table}.thread_id) "
                 f"OR current_setting('{BYPASS_SETTING}', true) = 'on'")
    return forced_policy_statements(table, condition)


def psycopg_url(sqlalchemy_url: str) -> str:
    """A SQLAlchemy URL (``postgresql+asyncpg://...``) as libpq/psycopg takes it."""
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(hide_password=False)


SCHEMA_LOCK = 7_310_015  # pg_advisory_lock key: one process at a time makes the checkpoint tables


async def _take_lock(owner: AsyncPostgresSaver, timeout_s: float = 600.0) -> None:
    """Take ``SCHEMA_LOCK`` on ``owner``'s connection, polling: a session blocked in pg_advisory_lock is a
    transaction in progress, which the holder's CREATE INDEX CONCURRENTLY would wait for (a deadlock)."""
    deadline = anyio.current_time() + timeout_s
    while True:
        async with owner._cursor() as cur:
            await cur.execute("SELECT pg_try_advisory_lock(%s)", (SCHEMA_LOCK,))
            row = await cur.fetchone()
        if row is not None and next(iter(row.values())):
            return
        if anyio.current_time() > deadline:
            raise TimeoutError("another process held the checkpoint schema lock too long")
        await anyio.sleep(0.2)


class PostgresCheckpoints:
    """The scale profile: ``AsyncPostgresSaver`` on the shared PostgreSQL, tables under RLS (module doc)."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, app_url: str, owner_url: str, *, max_size: int = 10) -> PostgresCheckpoints:
        async with AsyncPostgresSaver.from_conn_string(psycopg_url(owner_url)) as owner:
            # API and worker processes starting together on a fresh database would both CREATE the tables
            # (a unique violation in pg_type): one at a time, under a session lock on the owner's connection.
            await _take_lock(owner)
            try:
                await owner.setup()
                async with owner._cursor() as cur:
                    for table in CHECKPOINT_TABLES:
                        for statement in checkpoint_rls_statements(table):
                            await cur.execute(statement)
            finally:
                async with owner._cursor() as cur:
                    await cur.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK,))
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            psycopg_url(app_url), min_size=1, max_size=max_size, open=False,
            kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row})
        await pool.open(wait=True)
        return cls(pool)

    @asynccontextmanager
    async def for_tenant(self, org_id: str) -> AsyncIterator[BaseCheckpointSaver[Any]]:
        yield TenantPostgresSaver(self._pool, org_id)

    async def delete_thread(self, org_id: str, thread_id: str) -> None:
        async with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
            await cur.execute(_BYPASS_IN_TRANSACTION)  # transaction-local: the pooled connection keeps nothing
            await cur.execute("SELECT org_id FROM agent_threads WHERE id = %s FOR UPDATE", (thread_id,))
            owner = await cur.fetchone()
            if owner is not None and owner["org_id"] != org_id:  # another organisation's live thread: not ours to erase
                return
            for table in CHECKPOINT_TABLES:
                await cur.execute(f"DELETE FROM {table} WHERE thread_id = %s", (thread_id,))

    async def prune(self, org_id: str, thread_id: str, keep: int) -> int:
        async with self._pool.connection() as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
            await cur.execute(_SET_TENANT, (org_id,))
            return await prune_postgres(cur, thread_id, keep)

    async def aclose(self) -> None:
        await self._pool.close()


async def open_checkpoints(settings: Settings) -> Checkpoints:
    """The checkpointer the settings call for: SQLite in the data dir, or PostgreSQL when Atrium's database
    is PostgreSQL. Called once by the container; closed with ``aclose``."""
    if settings.is_sqlite:
        return await SqliteCheckpoints.open(settings.data_dir / "checkpoints.db")
    return await PostgresCheckpoints.open(settings.resolved_database_url, settings.resolved_migration_database_url)
