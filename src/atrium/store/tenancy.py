"""Tenant isolation in the database: PostgreSQL Row-Level Security over scoped sessions.

Every tenant table carries its tenant in a column (``org_id``; ``tenant`` in the pgvector tables, ``id``
in ``organizations``). Repositories always filter on it (the only protection on SQLite). On PostgreSQL,
each such table also has ``ENABLE`` + ``FORCE ROW LEVEL SECURITY`` and one policy, ``tenant_isolation``:
a row is visible and writable only when its tenant equals ``current_setting('app.current_org_id')``, or
when the transaction runs in the system scope (``app.bypass_rls = 'on'``). Both settings are set per
transaction (``set_config(..., true)``, see ``atrium.store.scope``), so nothing survives in a pooled
connection:

- ``Database.tenant_session(org_id)``: the tenant scope, for everything done on behalf of a caller;
- ``Database.system_session()``: the system scope, for the few cross-tenant tasks (authentication before
  the tenant is known, job claiming, index reconciliation over all tenants, bootstrap).

What this protects against: a query in application code that forgets its ``org_id`` filter (or joins
through a row of another tenant) returns nothing of another tenant and cannot write into one. What it does
not: the application role can set either setting itself, so SQL injection or a compromised process is not
contained; superusers and ``BYPASSRLS`` roles ignore policies altogether (the start-up check warns, or
refuses with ``database.require_rls``). See docs/tenancy.md.

Rule for new tables: a table holding a tenant's rows gets an ``org_id`` column and, in the migration that
creates it, ``enable_rls(op.get_bind(), "<table>")``. ``tests/integration/test_rls.py`` fails for any
table with an ``org_id`` (or ``tenant``) column that lacks it. The same holds for tables created outside
Alembic (the pgvector tables: their setup calls ``rls_statements``; the LangGraph checkpoint tables, which
hold no tenant column: ``atrium.agents.checkpoints`` puts them under a policy through their thread's row in
``agent_threads``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url

from atrium.store.scope import BYPASS_SETTING, DIVISION_SETTING, KEY_SETTING, ROLE_SETTING, TENANT_SETTING, USER_SETTING

if TYPE_CHECKING:
    from atrium.store.engine import Database

log = logging.getLogger(__name__)

POLICY_NAME = "tenant_isolation"
ACCESS_POLICY_NAME = "principal_access"
# Columns that name a row's tenant; a table with one of them must be under RLS.
TENANT_COLUMNS = ("org_id", "tenant")


class IsolationError(RuntimeError):
    """The database connection would not isolate tenants and ``database.require_rls`` demands it."""


# --- DDL: policies -----------------------------------------------------------------------------------------

def _policy_condition(column: str) -> str:
    return (f"{column} = current_setting('{TENANT_SETTING}', true) "
            f"OR current_setting('{BYPASS_SETTING}', true) = 'on'")


def rls_statements(table: str, column: str = "org_id") -> list[str]:
    """PostgreSQL statements putting ``table`` under tenant isolation on ``column`` (idempotent). Run them
    as the table's owner."""
    return forced_policy_statements(table, _policy_condition(_identifier(column)))


def forced_policy_statements(table: str, condition: str) -> list[str]:
    """``table`` under row security (forced, so its owner too) with the one policy ``condition``
    (idempotent; run as the table's owner)."""
    name = _identifier(table)
    return [
        f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY",
        f"ALTER TABLE {name} FORCE ROW LEVEL SECURITY",
        f"DROP POLICY IF EXISTS {POLICY_NAME} ON {name}",
        f"CREATE POLICY {POLICY_NAME} ON {name} AS PERMISSIVE FOR ALL USING ({condition}) WITH CHECK ({condition})",
    ]


def _setting(name: str) -> str:
    return f"coalesce(current_setting('{name}', true), '')"


SERVICE_SCOPE = f"{_setting(ROLE_SETTING)} = ''"
OWNER_MATCH = (f"((user_id IS NOT NULL AND user_id = {_setting(USER_SETTING)}) "
               f"OR (user_id IS NULL AND api_key_id = {_setting(KEY_SETTING)}))")
# Who may read a row with the collections' visibility columns (collections, artifacts).
READABLE_COLLECTION = (
    f"(visibility = 'org' "
    f"OR (visibility = 'division' AND (division_id = {_setting(DIVISION_SETTING)} "
    f"OR ({_setting(DIVISION_SETTING)} = '' AND {_setting(ROLE_SETTING)} IN ('admin', 'owner')))) "
    f"OR (visibility = 'private' AND {OWNER_MATCH}))")
# What a principal's scope may touch, per table (a RESTRICTIVE policy, on top of ``tenant_isolation``).
# Subqueries run under the referenced table's own policies: a message is visible when its conversation
# is, a document or chunk when its collection is.
ACCESS_RULES: dict[str, str] = {
    "conversations": OWNER_MATCH,
    "queries": OWNER_MATCH,
    "jobs": OWNER_MATCH,
    "messages": "EXISTS (SELECT 1 FROM conversations c WHERE c.id = messages.conversation_id)",
    "collections": READABLE_COLLECTION,
    "documents": ("EXISTS (SELECT 1 FROM collections c WHERE c.org_id = documents.org_id "
                  "AND c.name = documents.collection)"),
    "chunks": "EXISTS (SELECT 1 FROM collections c WHERE c.org_id = chunks.org_id AND c.name = chunks.collection)",
    "artifacts": READABLE_COLLECTION,
    "artifact_versions": "EXISTS (SELECT 1 FROM artifacts a WHERE a.id = artifact_versions.artifact_id)",
    "changes": OWNER_MATCH,  # the sync change log: a change is its conversation owner's
    "projects": READABLE_COLLECTION,  # org or private, as an artifact (agents/projects.py)
    "notification_devices": OWNER_MATCH,  # a device receives its owner's notifications only
}


# The agents API's tables (migration 0008): a thread is its owner's, or readable by the organisation
# (``visibility = 'org'``); a run is visible when its thread is.
AGENT_ACCESS_RULES: dict[str, str] = {
    "agent_threads": f"(visibility = 'org' OR {OWNER_MATCH})",
    "agent_runs": "EXISTS (SELECT 1 FROM agent_threads t WHERE t.id = agent_runs.thread_id)",
}


# Webhooks (migration 0019): an organisation-wide setting, seen and changed only by the organisation's
# unscoped admins and owners in a principal's scope (deliveries run in the service scope).
WEBHOOK_ACCESS_RULES: dict[str, str] = {
    "webhooks": f"({_setting(ROLE_SETTING)} IN ('admin', 'owner') AND {_setting(DIVISION_SETTING)} = '')",
}


def access_statements(table: str, rule: str | None = None) -> list[str]:
    """The principal-access policy of ``table`` (idempotent): in a principal's scope only the rows the
    rules of ``atrium.accounts.ownership`` allow; in the service and system scopes, the tenant's rows.
    ``rule``: the table's condition (default: its entry in ``ACCESS_RULES``)."""
    name = _identifier(table)
    condition = f"{SERVICE_SCOPE} OR {rule or ACCESS_RULES[table]}"
    return [
        f"DROP POLICY IF EXISTS {ACCESS_POLICY_NAME} ON {name}",
        f"CREATE POLICY {ACCESS_POLICY_NAME} ON {name} AS RESTRICTIVE FOR ALL USING ({condition}) "
        f"WITH CHECK ({condition})",
    ]


def enable_access_policies(connection: Connection, rules: dict[str, str] | None = None) -> None:
    """Put every table of ``rules`` (default ``ACCESS_RULES``) under its principal-access policy
    (PostgreSQL only). A table that does not exist yet is skipped: a migration run before the one that
    creates it cannot apply its rule, and the creating migration calls this for it."""
    if connection.dialect.name == "postgresql":
        for table, rule in (rules or ACCESS_RULES).items():
            if _exists(connection, table):
                for statement in access_statements(table, rule):
                    connection.execute(text(statement))


def disable_access_policies(connection: Connection, rules: dict[str, str] | None = None) -> None:
    if connection.dialect.name == "postgresql":
        for table in rules or ACCESS_RULES:
            if _exists(connection, table):
                connection.execute(text(f"DROP POLICY IF EXISTS {ACCESS_POLICY_NAME} ON {_identifier(table)}"))


def _exists(connection: Connection, table: str) -> bool:
    found = connection.execute(text("SELECT to_regclass(:name) IS NOT NULL"), {"name": _identifier(table)})
    return found.scalar() is True


def no_rls_statements(table: str) -> list[str]:
    name = _identifier(table)
    return [
        f"DROP POLICY IF EXISTS {POLICY_NAME} ON {name}",
        f"ALTER TABLE {name} NO FORCE ROW LEVEL SECURITY",
        f"ALTER TABLE {name} DISABLE ROW LEVEL SECURITY",
    ]


def enable_rls(connection: Connection, table: str, column: str = "org_id") -> None:
    """Put ``table`` under tenant isolation; for migrations: ``enable_rls(op.get_bind(), "my_table")``.
    Does nothing on SQLite, where repositories alone scope by tenant."""
    if connection.dialect.name == "postgresql":
        for statement in rls_statements(table, column):
            connection.execute(text(statement))


def disable_rls(connection: Connection, table: str) -> None:
    """Undo ``enable_rls`` (for a migration's downgrade)."""
    if connection.dialect.name == "postgresql":
        for statement in no_rls_statements(table):
            connection.execute(text(statement))


def _identifier(name: str) -> str:
    if not name.replace("_", "").isalnum() or not name.isascii():
        raise ValueError(f"not a plain SQL identifier: {name!r}")
    return name


# --- The application role --------------------------------------------------------------------------------

def app_role_grants(role: str, schema: str) -> list[str]:
    """What the application role needs: data access on every table and sequence (now, and, through default
    privileges, on what later migrations create), never DDL or ownership. It may not rewrite the migration
    history nor edit or delete audit rows."""
    return [
        f"GRANT USAGE ON SCHEMA {schema} TO {role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {role}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT USAGE, SELECT ON SEQUENCES TO {role}",
        f"REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON alembic_version FROM {role}",
        f"REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM {role}",
    ]


def app_role_name(app_url: str, owner_url: str) -> str | None:
    """The role the application connects as, when it differs from the migration (owner) role."""
    app_user, owner_user = make_url(app_url).username, make_url(owner_url).username
    if not app_user or app_user == owner_user:
        return None
    return app_user


async def grant_app_role(owner: Database, role: str) -> None:
    """Grant ``role`` what the application needs, as the owner (idempotent; ``atrium migrate`` runs it
    when ``migration_database_url`` is set). The role itself must exist (see docs/tenancy.md)."""
    async with owner.system_session() as session:
        exists = await session.scalar(text("SELECT 1 FROM pg_roles WHERE rolname = :role"), {"role": role})
        if not exists:
            raise IsolationError(f"the application role {role!r} does not exist: create it first (docs/tenancy.md)")
        preparer = session.get_bind().dialect.identifier_preparer
        schema = await session.scalar(text("SELECT current_schema()"))
        for statement in app_role_grants(preparer.quote(role), preparer.quote(str(schema))):
            await session.execute(text(statement))


# --- Start-up check ----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class IsolationReport:
    role: str
    superuser: bool
    bypass_rls: bool
    unprotected: tuple[str, ...]  # tables with a tenant column but without ENABLE + FORCE RLS

    @property
    def problems(self) -> list[str]:
        found = []
        if self.superuser:
            found.append(f"the database role {self.role!r} is a superuser, which ignores Row-Level Security")
        if self.bypass_rls:
            found.append(f"the database role {self.role!r} has BYPASSRLS, which ignores Row-Level Security")
        if self.unprotected:
            found.append("tables without Row-Level Security: " + ", ".join(self.unprotected))
        return found


UNPROTECTED_TABLES_SQL = """
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p')
  AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND NOT a.attisdropped
              AND a.attname = ANY(:columns))
  AND NOT (c.relrowsecurity AND c.relforcerowsecurity)
ORDER BY c.relname
"""


async def inspect_isolation(db: Database) -> IsolationReport | None:
    """How the connection's role stands with RLS, and which tenant tables lack it (None on SQLite)."""
    if db.is_sqlite:
        return None
    async with db.system_session() as session:
        row = (await session.execute(text(
            "SELECT current_user, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"))).one()
        unprotected = tuple(await session.scalars(text(UNPROTECTED_TABLES_SQL),
                                                  {"columns": list(TENANT_COLUMNS)}))
    return IsolationReport(role=str(row[0]), superuser=bool(row[1]), bypass_rls=bool(row[2]),
                           unprotected=unprotected)


async def verify_isolation(db: Database, *, require: bool) -> IsolationReport | None:
    """At start-up on PostgreSQL: warn loudly when tenants would not be isolated by the database, or, with
    ``require``, refuse to start."""
    report = await inspect_isolation(db)
    if report is None or not report.problems:
        return report
    message = "; ".join(report.problems)
    if require:
        raise IsolationError(f"database.require_rls is set but {message}. See docs/tenancy.md.")
    log.warning("TENANT ISOLATION IS NOT ENFORCED BY THE DATABASE: %s. Only the application's own filters "
                "separate tenants. Connect as a normal role (docs/tenancy.md) or set "
                "database.require_rls to refuse to start.", message)
    return report

