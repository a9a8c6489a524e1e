"""docs/operations.md, "Backups": the PostgreSQL procedure run for real (pgserver's PostgreSQL 16 and its own
pg_dump / pg_restore). Forced Row-Level Security makes the owner role's dump fail instead of writing a
half-empty file; a BYPASSRLS backup role with pg_read_all_data dumps everything; restored into a new database
as the docs say, Atrium answers the same search through its application role. And the SQLite online backup
of a live database opens with every row."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from atrium.store.engine import Database, build_engine
from tests.api.helpers import ingest
from tests.conftest import ADMIN_KEY, make_settings, start_app
from tests.postgres_fixtures import PostgresServer
from tests.tenancy_helpers import database_with_app_role

pytestmark = pytest.mark.integration


def pg_tool(name: str) -> str:
    pgserver = pytest.importorskip("pgserver")
    return str(Path(pgserver.__file__).parent / "pginstall" / "bin" / name)


def with_role(url: str, role: str, password: str, database: str | None = None) -> str:
    changed = make_url(url).set(username=role, password=password)
    if database is not None:
        changed = changed.set(database=database)
    return changed.render_as_string(hide_password=False)


async def search_hits(settings: Any) -> list[tuple[str, str]]:
    app, lifespan = await start_app(settings)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://atrium.test",
                                     headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
            response = await client.post("/api/v1/search/semantic", json={"query": "refunds", "mode": "hybrid"})
            assert response.status_code == 200, response.text
            return [(hit["source"], hit["text"]) for hit in response.json()["results"]]
    finally:
        await lifespan.__aexit__(None, None, None)


async def test_pg_dump_through_a_backup_role_restores_a_working_database(
        tmp_path: Path, postgres: PostgresServer) -> None:
    # The documented setup: a non-superuser owner runs migrations, the application role has no BYPASSRLS.
    urls = await database_with_app_role(postgres)
    owner_role, source_db = urls.role + "_owner", make_url(urls.owner_url).database
    await anyio.to_thread.run_sync(postgres.psql, f"CREATE ROLE {owner_role} LOGIN PASSWORD 'owner-pw' NOSUPERUSER; "
                                                  f"ALTER DATABASE {source_db} OWNER TO {owner_role};")
    superuser = Database(build_engine(urls.owner_url))
    async with superuser.system_session() as session:
        await session.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
    await superuser.dispose()
    owner_url = with_role(urls.owner_url, owner_role, "owner-pw")
    settings = make_settings(tmp_path / "data", database_url=urls.app_url, migration_database_url=owner_url,
                             database={"require_rls": True})
    app, lifespan = await start_app(settings)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://atrium.test",
                                     headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
            await ingest(client)
    finally:
        await lifespan.__aexit__(None, None, None)
    before = await search_hits(settings)
    assert before and before[0][0] == "billing.md"

    socket_dir = postgres.socket_dir

    def pg_dump(role: str, password: str, out: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([pg_tool("pg_dump"), "--format=custom", "--file", str(out), "--host", socket_dir,
                               "--username", role, "--dbname", str(source_db)],
                              capture_output=True, text=True, timeout=120, env={"PGPASSWORD": password})

    # The owner is subject to its own forced policies: pg_dump refuses rather than dump nothing.
    refused = await anyio.to_thread.run_sync(pg_dump, owner_role, "owner-pw", tmp_path / "owner.dump")
    assert refused.returncode != 0
    assert "row-level security" in refused.stderr

    backup_role = "backup_" + uuid.uuid4().hex[:8]
    await anyio.to_thread.run_sync(postgres.psql, f"CREATE ROLE {backup_role} LOGIN PASSWORD 'backup-pw' BYPASSRLS; "
                                                  f"GRANT pg_read_all_data TO {backup_role};")
    dumped = await anyio.to_thread.run_sync(pg_dump, backup_role, "backup-pw", tmp_path / "atrium.dump")
    assert dumped.returncode == 0, dumped.stderr

    # Restore as the docs say: an empty database owned by the owner, pg_restore as a superuser, atrium migrate.
    restored_db = "r_" + uuid.uuid4().hex[:12]
    await anyio.to_thread.run_sync(postgres.psql, f"CREATE DATABASE {restored_db} OWNER {owner_role};")
    restore = await anyio.to_thread.run_sync(lambda: subprocess.run(
        [pg_tool("pg_restore"), "--dbname", restored_db, "--exit-on-error", "--host", socket_dir,
         "--username", "postgres", str(tmp_path / "atrium.dump")], capture_output=True, text=True, timeout=120))
    assert restore.returncode == 0, restore.stderr
    restored = make_settings(tmp_path / "restored-data", database={"require_rls": True},
                             database_url=with_role(urls.app_url, urls.role, "app-password", restored_db),
                             migration_database_url=with_role(urls.owner_url, owner_role, "owner-pw", restored_db))
    assert await search_hits(restored) == before  # start-up migrates (grants) and serves the restored rows


def test_sqlite_online_backup_of_a_live_database(tmp_path: Path) -> None:
    """The documented Python command (read from docs/operations.md), taken while a writer holds the database
    open in WAL mode with uncheckpointed pages (a plain copy of the file alone would miss them)."""
    live = tmp_path / "atrium.db"
    writer = sqlite3.connect(live)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("CREATE TABLE t (n INTEGER)")
    writer.executemany("INSERT INTO t VALUES (?)", [(n,) for n in range(1000)])
    writer.commit()
    assert (tmp_path / "atrium.db-wal").stat().st_size > 0
    backup = tmp_path / "backup.db"
    docs = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text(encoding="utf-8")
    match = re.search(r'^python -c "(import sqlite3;.*)"$', docs, re.M)
    assert match, "docs/operations.md no longer shows the Python backup command"
    command = match.group(1).replace("data/atrium.db", str(live)).replace("backup/atrium.db", str(backup))
    subprocess.run([sys.executable, "-c", command], check=True, timeout=60)
    assert sqlite3.connect(backup).execute("SELECT count(*) FROM t").fetchone() == (1000,)
    plain_copy = tmp_path / "copy.db"
    plain_copy.write_bytes(live.read_bytes())
    with pytest.raises(sqlite3.OperationalError):
        sqlite3.connect(plain_copy).execute("SELECT count(*) FROM t").fetchone()
    writer.close()
