"""Row-Level Security on every tenant table (PostgreSQL only; nothing to do on SQLite).

Each table gets ENABLE + FORCE ROW LEVEL SECURITY and the ``tenant_isolation`` policy of
``atrium.store.tenancy``: rows of the tenant in ``app.current_org_id``, or every row in the system scope.
The table list is frozen here; pgvector tables made before this revision (``atrium_vectors_<dims>``) are
covered too, later ones by their adapter. Later migrations call ``enable_rls`` for the tables they add.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from atrium.store.tenancy import disable_rls, enable_rls

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLES = {
    "organizations": "id",
    "users": "org_id",
    "divisions": "org_id",
    "memberships": "org_id",
    "api_keys": "org_id",
    "refresh_tokens": "org_id",
    "conversations": "org_id",
    "messages": "org_id",
    "documents": "org_id",
    "chunks": "org_id",
    "jobs": "org_id",
    "queries": "org_id",
    "usage": "org_id",
    "knowledge_revisions": "org_id",
    "budgets": "org_id",
    "budget_spend": "org_id",
    "org_policies": "org_id",
    "audit_log": "org_id",
}


def _vector_tables(connection: sa.Connection) -> list[str]:
    return list(connection.scalars(sa.text(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relkind = 'r' AND c.relname LIKE 'atrium\\_vectors\\_%'")))


def upgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name != "postgresql":
        return
    for table, column in TABLES.items():
        enable_rls(connection, table, column)
    for table in _vector_tables(connection):
        enable_rls(connection, table, "tenant")


def downgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name != "postgresql":
        return
    for table in [*TABLES, *_vector_tables(connection)]:
        disable_rls(connection, table)
