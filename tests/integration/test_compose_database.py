"""The database side of docker-compose.yml without Docker: deploy/compose/postgres-init.sh run as the
postgres image runs it (psql on the new database, the image's variables), on pgserver's PostgreSQL 16 with
pgvector. It must leave an application role that Row-Level Security applies to, which Atrium then migrates
for and serves with ``database.require_rls: true``, as the compose file configures it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import anyio
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from atrium.store.engine import Database, build_engine
from tests.api.helpers import ingest
from tests.conftest import ADMIN_KEY, make_settings, start_app
from tests.postgres_fixtures import PostgresServer

pytestmark = pytest.mark.integration
INIT = Path(__file__).resolve().parents[2] / "deploy" / "compose" / "postgres-init.sh"


def run_init(postgres: PostgresServer, database: str, password: str) -> subprocess.CompletedProcess[str]:
    pgserver = pytest.importorskip("pgserver")
    bin_dir = Path(pgserver.__file__).parent / "pginstall" / "bin"
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "PGHOST": postgres.socket_dir,
           "POSTGRES_USER": "postgres", "POSTGRES_DB": database, "APP_DB_PASSWORD": password}
    return subprocess.run(["sh", str(INIT)], env=env, capture_output=True, text=True, timeout=60)


async def test_the_init_script_makes_a_role_under_rls(tmp_path: Path, postgres: PostgresServer) -> None:
    owner_url = await anyio.to_thread.run_sync(postgres.create_database)
    database = str(make_url(owner_url).database)
    result = await anyio.to_thread.run_sync(run_init, postgres, database, "app-pw-0123456789")
    assert result.returncode == 0, result.stderr
    assert "app-pw-0123456789" not in result.stdout + result.stderr

    owner = Database(build_engine(owner_url))
    try:
        async with owner.system_session() as session:
            role = (await session.execute(text(
                "SELECT rolsuper, rolbypassrls, rolcanlogin, rolcreatedb, rolcreaterole FROM pg_roles "
                "WHERE rolname = 'atrium_app'"))).one()
            assert tuple(role) == (False, False, True, False, False)
            assert await session.scalar(text("SELECT count(*) FROM pg_extension WHERE extname = 'vector'")) == 1
    finally:
        await owner.dispose()

    # As in docker-compose.yml: the app as atrium_app, migrations as the owner, RLS required.
    app_url = make_url(owner_url).set(username="atrium_app", password="app-pw-0123456789").render_as_string(
        hide_password=False)
    settings = make_settings(tmp_path / "data", database_url=app_url, migration_database_url=owner_url,
                             database={"require_rls": True})
    app, lifespan = await start_app(settings)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://atrium.test",
                                     headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client:
            await ingest(client)
            hits = (await client.post("/api/v1/search/semantic", json={"query": "refunds"})).json()["results"]
            assert hits[0]["source"] == "billing.md"
            assert (await client.get("/ready")).status_code == 200
    finally:
        await lifespan.__aexit__(None, None, None)

    # A failing statement stops the script with an error (ON_ERROR_STOP, set -e), which aborts the image's
    # initialisation instead of leaving a half-made database: here the role already exists in this cluster.
    second = await anyio.to_thread.run_sync(postgres.create_database)
    again = await anyio.to_thread.run_sync(run_init, postgres, str(make_url(second).database), "x")
    assert again.returncode != 0 and "already exists" in again.stderr
