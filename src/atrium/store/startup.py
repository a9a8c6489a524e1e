"""The start-up lock: the work that must run once however many processes start at the same moment (schema
migrations, the first start's admin account) runs under it, one process at a time.

Several processes may start together: ``atrium serve --workers N``, API replicas and ``atrium worker``
processes of the scale profile rolled out at once, the CLI beside a server. Each one migrates (a no-op once
the schema is current) and checks for the admin account; without the lock two of them on a fresh database
would both create the schema or both bootstrap an administrator. The lock lives where the processes meet:

- PostgreSQL: a session-level advisory lock (``pg_advisory_lock``) on a connection of its own, released when
  the work is done or the connection drops (a killed process never leaves it held);
- SQLite: an OS file lock (``filelock``) beside the database file, which only processes of one host share
  anyway; the OS releases it when the process dies.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from filelock import FileLock
from sqlalchemy import text
from sqlalchemy.engine import make_url

from atrium.store.engine import temporary_database

# Any constant the deployment does not otherwise use as an advisory lock key ("atrium" in ASCII).
STARTUP_LOCK_KEY = 0x617472697563


def sqlite_lock_path(database_url: str) -> Path | None:
    """``<database file>.startup.lock``; None for an in-memory database (one process by nature)."""
    database = make_url(database_url).database
    if not database or database == ":memory:" or "mode=memory" in database_url:
        return None
    return Path(database).with_name(Path(database).name + ".startup.lock")


@asynccontextmanager
async def startup_lock(database_url: str, *, timeout_s: float = 600.0) -> AsyncIterator[None]:
    """Hold the deployment's start-up lock (waiting up to ``timeout_s`` for another process to finish its
    start-up work). ``database_url``: the migration role's URL on PostgreSQL (it owns the schema)."""
    if database_url.startswith("sqlite"):
        path = sqlite_lock_path(database_url)
        if path is None:
            yield
            return
        await anyio.to_thread.run_sync(lambda: path.parent.mkdir(parents=True, exist_ok=True))
        # Acquired and released from worker threads: not a thread-local lock.
        lock = FileLock(path, timeout=timeout_s, thread_local=False, mode=0o600)  # private, as the data dir
        await anyio.to_thread.run_sync(lock.acquire)
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(lock.release)
        return
    async with temporary_database(database_url) as db, db.engine.connect() as connection:
        with anyio.fail_after(timeout_s):
            await connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": STARTUP_LOCK_KEY})
        await connection.commit()  # the lock is the session's, not the transaction's
        try:
            yield
        finally:
            await connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": STARTUP_LOCK_KEY})
            await connection.commit()
