"""Row-Level Security on real PostgreSQL, attacked through raw SQL as the application's normal role.

Migrations run as the superuser (``migration_database_url``), which also grants the application role
its privileges; every check then connects as that role, which RLS applies to (a superuser would bypass
it). Rows of two tenants are seeded in every table that has a tenant column, found by introspection:
a table added later without seed rows or without RLS fails here.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from atrium.container import migrate
from atrium.gateway.metering import UsageRecorder, UsageRow
from atrium.knowledge.vector.pgvector import PgVectorIndex
from atrium.store.engine import Database, build_engine
from atrium.store.migrate import MIGRATIONS_DIR, alembic_config
from atrium.store.models import (
    TENANT_TABLES,
    AgentRun,
    AgentThread,
    ApiKey,
    Artifact,
    ArtifactVersion,
    AuditEvent,
    Budget,
    BudgetReservation,
    BudgetSpend,
    Change,
    Chunk,
    Collection,
    Conversation,
    Division,
    Document,
    EmbeddingCacheEntry,
    Invitation,
    Job,
    KnowledgeRevision,
    Membership,
    Message,
    NotificationDevice,
    Organization,
    OrgPolicy,
    Project,
    QueryRecord,
    RefreshToken,
    UsageRecord,
    UsageReset,
    User,
    Webhook,
)
from atrium.store.tenancy import IsolationError, enable_rls, inspect_isolation, verify_isolation
from tests.api.helpers import ingest
from tests.conftest import ADMIN_KEY, make_settings, start_app
from tests.postgres_fixtures import PostgresServer
from tests.tenancy_helpers import database_with_app_role

pytestmark = pytest.mark.integration

ORG_A, ORG_B = "a" * 32, "b" * 32
VECTOR_TABLE = "atrium_vectors_8"

TENANT_TABLES_SQL = """
SELECT c.relname, a.attname FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND NOT a.attisdropped AND a.attname IN ('org_id', 'tenant')
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
UNION SELECT 'organizations', 'id'
ORDER BY 1
"""


@dataclass
class World:
    owner: Database  # the superuser (bypasses RLS): seeding and checking
    app: Database  # the application's normal role: under RLS
    tables: dict[str, str]  # every table with a tenant column -> that column
    owner_url: str
    app_url: str
    role: str


async def _seed(owner: Database) -> None:
    """One or more rows per tenant in every tenant table."""
    vectors = PgVectorIndex(owner, 8)
    await vectors.ensure_schema()
    async with owner.system_session() as session:
        for org in (ORG_A, ORG_B):
            session.add(Organization(id=org, name=f"org {org[0]}"))
        await session.flush()
        for org in (ORG_A, ORG_B):
            tag = org[0]
            division = Division(org_id=org, name=f"division {tag}")
            user = User(org_id=org, email=f"user@{tag}.example", role="owner")
            session.add_all([division, user])
            await session.flush()
            conversation = Conversation(org_id=org, user_id=user.id, title=f"secret {tag}")
            document = Document(org_id=org, collection="docs", source=f"{tag}.md", content_hash=tag * 64)
            budget = Budget(org_id=org, scope="org", subject_id=org, period="month", limit_micro_usd=1_000_000)
            artifact = Artifact(org_id=org, user_id=user.id, kind="markdown", title=f"secret {tag}")
            session.add_all([conversation, document, budget, artifact])
            await session.flush()
            session.add_all([
                Membership(org_id=org, user_id=user.id, division_id=division.id, role="owner"),
                ApiKey(org_id=org, user_id=user.id, prefix=f"atr_{tag}", key_hash=tag * 64),
                RefreshToken(org_id=org, user_id=user.id, family_id=tag * 32, token_hash=tag * 64,
                             expires_at=datetime.now(UTC) + timedelta(days=1)),
                Message(org_id=org, conversation_id=conversation.id, role="user", content=f"secret {tag}"),
                Chunk(org_id=org, document_id=document.id, collection="docs", ordinal=0, text=f"secret {tag}",
                      embedding=b"\0" * 32),
                Job(org_id=org, kind="ingest"),
                QueryRecord(org_id=org, user_id=user.id, question=f"secret {tag}"),
                UsageRecord(org_id=org, provider="fake", model="fake", endpoint="/t", outcome="ok"),
                UsageReset(org_id=org, user_id=user.id),
                KnowledgeRevision(org_id=org, revision=1),
                BudgetSpend(budget_id=budget.id, window="2026-11", org_id=org),
                BudgetReservation(id=tag * 32, budget_id=budget.id, org_id=org, window="2026-11",
                                  amount_micro_usd=1, expires_at=datetime.now(UTC) + timedelta(minutes=5)),
                OrgPolicy(org_id=org, policy={"pii": "redact"}),
                AuditEvent(org_id=org, action="test.seed"),
                Collection(org_id=org, name="docs"),
                Invitation(org_id=org, email=f"guest@{tag}.example", expires_at=datetime.now(UTC) + timedelta(days=7)),
                ArtifactVersion(artifact_id=artifact.id, number=1, org_id=org, title=f"secret {tag}",
                                content={"text": f"secret {tag}"}),
                Change(org_id=org, user_id=user.id, entity="conversation", entity_id=conversation.id,
                       conversation_id=conversation.id, op="upsert"),
                AgentThread(id=f"thread-{tag}", org_id=org, user_id=user.id, meta={"secret": tag}),
                Project(org_id=org, user_id=user.id, visibility="org", title=f"secret {tag}", description=""),
                NotificationDevice(org_id=org, user_id=user.id, kind="fcm", endpoint=f"secret-token-{tag}",
                                   endpoint_hash=tag * 8),
                Webhook(org_id=org, user_id=user.id, url=f"https://{tag}.example/hook", events=["job.failed"],
                        secret=f"whsec_{tag}", failures=0),
                EmbeddingCacheEntry(org_id=org, model="m" * 32, text_hash=tag * 8, vector=b"\0" * 16),
            ])
            await session.flush()
            session.add(AgentRun(org_id=org, thread_id=f"thread-{tag}", assistant_id="echo"))
        await session.flush()
        for number, org in enumerate((ORG_A, ORG_B), start=1):
            await session.execute(text(
                f"INSERT INTO {VECTOR_TABLE} (tenant, collection, id, embedding) "
                "VALUES (:org, 'docs', :id, '[1,0,0,0,0,0,0,0]')"), {"org": org, "id": number})


@pytest.fixture
async def world(tmp_path: Path, postgres: PostgresServer) -> AsyncIterator[World]:
    urls = await database_with_app_role(postgres)
    settings = make_settings(tmp_path / "data", database_url=urls.app_url, migration_database_url=urls.owner_url)
    await migrate(settings)
    owner, app = Database(build_engine(urls.owner_url)), Database(build_engine(urls.app_url))
    try:
        await _seed(owner)
        async with owner.system_session() as session:
            tables = {str(row[0]): str(row[1]) for row in await session.execute(text(TENANT_TABLES_SQL))}
        yield World(owner=owner, app=app, tables=tables, owner_url=urls.owner_url, app_url=urls.app_url,
                    role=urls.role)
    finally:
        await app.dispose()
        await owner.dispose()


async def _counts(db: Database, scope: str | None, table: str, column: str) -> dict[str, int]:
    """Rows per tenant that ``table`` shows in a tenant scope (``scope``) or the system scope (None)."""
    sql = text(f"SELECT {column}, count(*) FROM {table} GROUP BY {column}")
    opened = db.system_session() if scope is None else db.tenant_session(scope)
    async with opened as session:
        return {str(org): int(count) for org, count in await session.execute(sql)}


async def test_the_seed_covers_every_tenant_table(world: World) -> None:
    """Guards the other tests: each table with a tenant column holds rows of both tenants."""
    assert set(TENANT_TABLES) | {"organizations", "audit_log", VECTOR_TABLE} <= set(world.tables)
    for table, column in world.tables.items():
        counts = await _counts(world.owner, None, table, column)
        assert counts.get(ORG_A, 0) >= 1 and counts.get(ORG_B, 0) >= 1, (
            f"{table}: seed rows for both tenants in _seed() (found {counts})")


async def test_a_tenant_sees_only_its_own_rows_in_every_table(world: World) -> None:
    for table, column in world.tables.items():
        for org in (ORG_A, ORG_B):
            counts = await _counts(world.app, org, table, column)
            assert set(counts) == {org} and counts[org] >= 1, (table, org, counts)
        # The system scope (authentication, job claiming, index upkeep) sees both.
        assert set(await _counts(world.app, None, table, column)) >= {ORG_A, ORG_B}, table


async def test_a_query_that_forgets_its_tenant_filter_leaks_nothing(world: World) -> None:
    async with world.app.tenant_session(ORG_A) as session:
        texts = set(await session.scalars(text("SELECT text FROM chunks")))
        joined = set(await session.scalars(text(
            "SELECT m.content FROM messages m JOIN conversations c ON c.id = m.conversation_id")))
        by_id = await session.scalar(text("SELECT count(*) FROM conversations WHERE title = 'secret b'"))
        vectors = await session.scalar(text(f"SELECT count(*) FROM {VECTOR_TABLE} WHERE tenant = :b"), {"b": ORG_B})
    assert texts == {"secret a"} and joined == {"secret a"} and by_id == 0 and vectors == 0


async def test_without_a_tenant_nothing_is_visible_and_a_scope_does_not_outlive_its_transaction(
        world: World) -> None:
    async with world.app.tenant_session(ORG_A) as session:
        scoped_pid = await session.scalar(text("SELECT pg_backend_pid()"))
        assert await session.scalar(text("SELECT count(*) FROM conversations")) == 1
    # The same pooled connection, outside any scoped session: the tenant setting is gone.
    async with world.app.engine.connect() as connection:
        assert await connection.scalar(text("SELECT pg_backend_pid()")) == scoped_pid
        for table in world.tables:
            assert await connection.scalar(text(f"SELECT count(*) FROM {table}")) == 0, table
        # A forged empty tenant matches nothing either.
        await connection.execute(text("SELECT set_config('app.current_org_id', '', true)"))
        assert await connection.scalar(text("SELECT count(*) FROM users")) == 0


def _insertable_columns(table: str) -> str:
    return (
        "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute "
        f"WHERE attrelid = '{table}'::regclass AND attnum > 0 AND NOT attisdropped AND attgenerated = ''"
    )


async def test_writing_a_row_of_another_tenant_is_refused_in_every_table(world: World) -> None:
    for table, column in world.tables.items():
        async with world.owner.system_session() as session:
            columns = await session.scalar(text(_insertable_columns(table)))
        # A copy of one of A's rows, moved to B, inserted in A's scope: the policy's WITH CHECK refuses it.
        forged = (f"INSERT INTO {table} ({columns}) SELECT {columns} FROM jsonb_populate_record(NULL::{table}, "
                  f"(SELECT to_jsonb(x) || jsonb_build_object('{column}', '{ORG_B}') FROM {table} x LIMIT 1))")
        for statement in (forged, f"UPDATE {table} SET {column} = '{ORG_B}'"):
            # audit_log is append-only: the application role may not UPDATE it at all.
            expected = "permission denied" if table == "audit_log" and statement.startswith("UPDATE") else (
                "new row violates row-level security policy")
            with pytest.raises(DBAPIError, match=expected):
                async with world.app.tenant_session(ORG_A) as session:
                    await session.execute(text(statement))
    after = {table: await _counts(world.owner, None, table, column) for table, column in world.tables.items()}
    assert all(counts == {ORG_A: counts[ORG_A], ORG_B: counts[ORG_B]} for counts in after.values())


async def test_another_tenants_rows_cannot_be_changed_or_deleted(world: World) -> None:
    for table, column in world.tables.items():
        if table == "audit_log":
            continue  # append-only: the application role may not update or delete any row (below)
        async with world.app.tenant_session(ORG_A) as session:
            updated = await session.execute(text(f"UPDATE {table} SET {column} = {column} WHERE {column} = :b"),
                                            {"b": ORG_B})
            deleted = await session.execute(text(f"DELETE FROM {table} WHERE {column} = :b"), {"b": ORG_B})
            assert updated.rowcount == 0 and deleted.rowcount == 0, table  # type: ignore[attr-defined]
        assert (await _counts(world.owner, None, table, column))[ORG_B] >= 1, table


async def test_the_application_role_has_data_access_only(world: World) -> None:
    """It may not change the schema, lift RLS, rewrite the migration history or touch audit rows."""
    for statement in ("CREATE TABLE sneaky (org_id text)", "ALTER TABLE users DISABLE ROW LEVEL SECURITY",
                      "ALTER TABLE users NO FORCE ROW LEVEL SECURITY", "DROP POLICY tenant_isolation ON users",
                      "DELETE FROM alembic_version", "UPDATE audit_log SET action = 'x'",
                      "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match=r"permission denied|must be owner"):
            async with world.app.system_session() as session:
                await session.execute(text(statement))


async def test_every_table_with_a_tenant_column_is_under_forced_rls_with_the_policy(world: World) -> None:
    """Fails for any table (from a later migration, the pgvector adapter, a checkpointer) that holds a
    tenant column without ENABLE + FORCE ROW LEVEL SECURITY and the tenant policy."""
    async with world.owner.system_session() as session:
        rows = (await session.execute(text(
            "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, "
            "(SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = 'tenant_isolation' "
            " AND pg_get_expr(p.polqual, p.polrelid) LIKE '%app.current_org_id%' "
            " AND pg_get_expr(p.polwithcheck, p.polrelid) LIKE '%app.current_org_id%') "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relname = ANY(:tables)"),
            {"tables": list(world.tables)})).all()
    assert {row[0] for row in rows} == set(world.tables)
    unprotected = [row[0] for row in rows if not (row[1] and row[2] and row[3] == 1)]
    assert unprotected == [], f"tables without tenant RLS: {unprotected}; call enable_rls in their migration"
    # The start-up check sees the same, from the application's side.
    report = await inspect_isolation(world.app)
    assert report is not None and report.problems == [] and report.role == world.role


async def test_enable_rls_is_the_helper_new_tables_need(world: World) -> None:
    async with world.owner.engine.begin() as connection:
        await connection.execute(text("CREATE TABLE later_feature (id text PRIMARY KEY, org_id text NOT NULL)"))
        await connection.execute(text(f"GRANT SELECT, INSERT ON later_feature TO {world.role}"))
        await connection.execute(text(f"INSERT INTO later_feature VALUES ('1', '{ORG_A}'), ('2', '{ORG_B}')"))
    report = await inspect_isolation(world.app)
    assert report is not None and report.unprotected == ("later_feature",)
    async with world.app.tenant_session(ORG_A) as session:
        assert await session.scalar(text("SELECT count(*) FROM later_feature")) == 2  # leaks before
    async with world.owner.engine.begin() as connection:
        await connection.run_sync(enable_rls, "later_feature")
        await connection.run_sync(enable_rls, "later_feature")  # idempotent
    async with world.app.tenant_session(ORG_A) as session:
        assert await session.scalar(text("SELECT count(*) FROM later_feature")) == 1
    report = await inspect_isolation(world.app)
    assert report is not None and report.unprotected == ()


async def test_usage_batches_of_several_tenants_are_written_each_in_its_own_scope(world: World) -> None:
    recorder = UsageRecorder(world.app)
    for org in (ORG_A, ORG_B, ORG_A):
        recorder.record(UsageRow(org_id=org, user_id=None, api_key_id=None, endpoint="/batch", provider="p",
                                 model="m", prompt_tokens=1, completion_tokens=1, cost_usd=0.0, latency_ms=1.0,
                                 outcome="ok", estimated=False))
    await recorder.aclose()
    async with world.owner.system_session() as session:
        rows = await session.execute(text(
            "SELECT org_id, count(*) FROM usage WHERE endpoint = '/batch' GROUP BY org_id"))
        assert dict(rows.all()) == {ORG_A: 2, ORG_B: 1}


async def test_the_startup_check_warns_or_refuses_for_a_role_that_bypasses_rls(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(IsolationError, match="superuser"):
        await verify_isolation(world.owner, require=True)
    with caplog.at_level(logging.WARNING, logger="atrium.store.tenancy"):
        report = await verify_isolation(world.owner, require=False)
    assert report is not None and report.superuser
    assert "TENANT ISOLATION IS NOT ENFORCED" in caplog.text and "superuser" in caplog.text
    assert await verify_isolation(world.app, require=True) is not None  # the normal role passes


async def test_the_app_refuses_to_start_as_a_superuser_when_rls_is_required(world: World, tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "su", database_url=world.owner_url, database={"require_rls": True})
    with pytest.raises(IsolationError, match="superuser"):
        await start_app(settings)


async def test_downgrade_lifts_rls_and_upgrade_restores_it(world: World) -> None:
    from alembic import command

    config = alembic_config(world.owner_url)
    await anyio.to_thread.run_sync(command.downgrade, config, "0003")
    async with world.app.tenant_session(ORG_A) as session:
        assert await session.scalar(text("SELECT count(DISTINCT org_id) FROM users")) == 2
    await anyio.to_thread.run_sync(command.upgrade, config, "head")
    async with world.app.tenant_session(ORG_A) as session:
        assert await session.scalar(text("SELECT count(DISTINCT org_id) FROM users")) == 1


async def test_the_documented_setup_with_a_non_superuser_owner(tmp_path: Path, postgres: PostgresServer) -> None:
    """docs/tenancy.md: an owner role (not a superuser) migrates; the app connects as a normal role. FORCE
    applies policies to the owner too, so migrations must run in the system scope to see every row."""
    urls = await database_with_app_role(postgres)
    owner_role = urls.role + "_owner"
    name = make_url(urls.owner_url).database
    await anyio.to_thread.run_sync(postgres.psql, f"CREATE ROLE {owner_role} LOGIN PASSWORD 'owner-pw' NOSUPERUSER; "
                                                  f"ALTER DATABASE {name} OWNER TO {owner_role};")
    superuser = Database(build_engine(urls.owner_url))
    async with superuser.system_session() as session:  # pgvector is not a trusted extension
        await session.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
    await superuser.dispose()
    owner_url = make_url(urls.owner_url).set(username=owner_role, password="owner-pw").render_as_string(
        hide_password=False)
    settings = make_settings(tmp_path / "data", database_url=urls.app_url, migration_database_url=owner_url,
                             database={"require_rls": True})
    app, lifespan = await start_app(settings)
    try:
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://atrium.test",
                                   headers={"Authorization": f"Bearer {ADMIN_KEY}"})
        async with client:
            await ingest(client)
            hits = (await client.post("/api/v1/search/semantic", json={"query": "refunds", "mode": "hybrid"})).json()
            assert hits["results"][0]["source"] == "billing.md"
    finally:
        await lifespan.__aexit__(None, None, None)
    owner = Database(build_engine(owner_url))
    try:
        report = await inspect_isolation(owner)
        assert report is not None and not report.superuser and report.unprotected == ()
        async with owner.engine.connect() as connection:  # the owner outside any scope: FORCE hides rows
            assert await connection.scalar(text("SELECT count(*) FROM chunks")) == 0
        async with owner.system_session() as session:
            assert await session.scalar(text("SELECT count(*) FROM chunks")) > 0
            tables = set(await session.scalars(text(
                f"SELECT relname FROM pg_class WHERE relowner = '{owner_role}'::regrole AND relkind = 'r'")))
            assert {"chunks", "users", "atrium_vectors_384"} <= tables
    finally:
        await owner.dispose()
    # The owner can take 0004 down and up again, and a later data migration run by it sees every row.
    from alembic import command
    from alembic.script import ScriptDirectory

    config = alembic_config(owner_url)
    await anyio.to_thread.run_sync(command.downgrade, config, "0003")
    await anyio.to_thread.run_sync(command.upgrade, config, "head")
    scripts = tmp_path / "migrations"
    await anyio.to_thread.run_sync(shutil.copytree, MIGRATIONS_DIR, scripts)
    head = ScriptDirectory.from_config(config).get_current_head()
    await anyio.Path(scripts / "versions" / "9999_probe.py").write_text(
        f'revision = "probe"\ndown_revision = "{head}"\n'
        "from alembic import op\nfrom sqlalchemy import text\n"
        "def upgrade():\n    assert op.get_bind().scalar(text('SELECT count(*) FROM chunks')) > 0\n")
    config.set_main_option("script_location", str(scripts))
    await anyio.to_thread.run_sync(command.upgrade, config, "probe")


async def test_checkpoints_are_under_rls_through_their_thread(world: World) -> None:
    """The LangGraph checkpoint tables (no tenant column) follow their thread's organisation: a saver lent
    for B neither reads, lists, overwrites nor deletes A's checkpoints, nor writes into A's thread."""
    from langgraph.checkpoint.base import empty_checkpoint

    from atrium.agents.checkpoints import CHECKPOINT_TABLES, PostgresCheckpoints

    checkpoints = await PostgresCheckpoints.open(world.app_url, world.owner_url, max_size=2)
    try:
        config = {"configurable": {"thread_id": "thread-a", "checkpoint_ns": ""}}
        async with checkpoints.for_tenant(ORG_A) as saver:
            await saver.aput(config, empty_checkpoint(), {"source": "input", "step": -1}, {})
            assert await saver.aget_tuple(config) is not None
        async with checkpoints.for_tenant(ORG_B) as saver:
            assert await saver.aget_tuple(config) is None
            assert [item async for item in saver.alist(config)] == []
            with pytest.raises(Exception, match="row-level security"):
                await saver.aput(config, empty_checkpoint(), {"source": "input", "step": -1}, {})
        await checkpoints.delete_thread(ORG_B, "thread-a")
        async with checkpoints.for_tenant(ORG_A) as saver:
            assert await saver.aget_tuple(config) is not None
        async with world.owner.system_session() as session:
            for table in CHECKPOINT_TABLES:
                forced = await session.scalar(text(
                    f"SELECT relrowsecurity AND relforcerowsecurity FROM pg_class WHERE relname = '{table}'"))
                assert forced, table
    finally:
        await checkpoints.aclose()
