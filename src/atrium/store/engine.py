"""Database engine and sessions: one engine per app, built in ``create_app`` and injected."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
from sqlalchemy import event
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from atrium.errors import Overloaded
from atrium.store.scope import Scope, ScopedSession, bind_scope


def build_engine(url: str, *, echo: bool = False, pool_timeout_s: float = 30.0) -> AsyncEngine:
    """An async engine; SQLite gets WAL, foreign keys and a busy timeout so the API, the CLI and the
    worker can share one file. Its errors and logs never quote a statement's parameters (password and key
    hashes, document text): ``hide_parameters``. ``pool_timeout_s``: the wait for a free connection (then
    ``Overloaded``, a typed 503, from ``Database``'s sessions)."""
    if url.startswith("sqlite"):
        # An in-memory database has one connection (StaticPool), which takes no wait.
        in_memory = ":memory:" in url or "mode=memory" in url or url.rstrip("/").endswith("sqlite+aiosqlite:")
        pooled: dict[str, Any] = {} if in_memory else {"pool_timeout": pool_timeout_s}
        engine = create_async_engine(url, echo=echo, hide_parameters=True, connect_args={"timeout": 30}, **pooled)
        event.listen(engine.sync_engine, "connect", sqlite_pragmas)
        return engine
    return create_async_engine(url, echo=echo, hide_parameters=True, pool_size=10, max_overflow=20,
                               pool_pre_ping=True, pool_timeout=pool_timeout_s)


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class Database:
    """The engine plus scoped sessions. Each opens a transaction that commits on success:
    ``tenant_session(org_id)`` for work on behalf of one tenant (on PostgreSQL, Row-Level Security hides
    and refuses every other tenant's rows), ``system_session()`` for the few cross-tenant tasks. See
    ``atrium.store.scope`` and ``atrium.store.tenancy``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        self._sessions = async_sessionmaker(engine, expire_on_commit=False, sync_session_class=ScopedSession)

    def tenant_session(self, org_id: str) -> AbstractAsyncContextManager[AsyncSession]:
        """A transaction that sees and writes only ``org_id``'s rows (enforced by the database on
        PostgreSQL; on SQLite by the repositories' own filters, which every query keeps regardless)."""
        return self._scoped(Scope.tenant(org_id))

    def scoped_session(self, scope: Scope) -> AbstractAsyncContextManager[AsyncSession]:
        """A transaction in ``scope``; for a principal's scope see ``atrium.accounts.ownership``."""
        return self._scoped(scope)

    def system_session(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A transaction across every tenant: authentication before the tenant is known, job claiming,
        index reconciliation, bootstrap. Keep its uses few and their queries explicit."""
        return self._scoped(Scope.everything())

    @asynccontextmanager
    async def _scoped(self, scope: Scope) -> AsyncIterator[AsyncSession]:
        try:
            async with self._sessions() as session:
                bind_scope(session, scope)
                async with session.begin():
                    yield session
        except PoolTimeout as exc:  # every connection stayed busy past the pool's wait: a typed 503
            raise Overloaded() from exc

    async def dispose(self) -> None:
        await self.engine.dispose()


@asynccontextmanager
async def temporary_database(url: str) -> AsyncIterator[Database]:
    """A short-lived ``Database`` (e.g. as the migration role, for schema work), disposed on exit."""
    db = Database(await anyio.to_thread.run_sync(build_engine, url))
    try:
        yield db
    finally:
        await db.dispose()
