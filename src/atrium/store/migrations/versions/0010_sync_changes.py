"""The sync change log: ``changes``, one row per change of a conversation or message, appended in the same
transaction (``GET /api/v1/sync``).

* ``seq``: an increasing id; ``tx``: on PostgreSQL the writing transaction's id (``pg_current_xact_id()``,
  a server default), so a reader can leave out what still-running transactions may yet commit; 0 on
  SQLite, where writers take turns.
* ``ix_messages_pending``: a partial index of the answers still ``pending`` (the abandoned-answer check).
* PostgreSQL: ``changes`` under ``tenant_isolation`` and the ``principal_access`` policy (a change is its
  conversation owner's, ``atrium.store.tenancy.ACCESS_RULES``).

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-05 16:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from atrium.store.tenancy import (
    ACCESS_RULES,
    disable_access_policies,
    disable_rls,
    enable_access_policies,
    enable_rls,
)

revision = "0010"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    connection = op.get_bind()
    postgres = connection.dialect.name == "postgresql"
    op.create_table(
        "changes",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("org_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=True),
        sa.Column("api_key_id", sa.String(length=32), nullable=True),
        sa.Column("entity", sa.String(length=20), nullable=False),
        sa.Column("entity_id", sa.String(length=32), nullable=False),
        sa.Column("conversation_id", sa.String(length=32), nullable=False),
        sa.Column("op", sa.String(length=10), nullable=False),
        sa.Column("tx", sa.BigInteger(), nullable=False,
                  server_default=sa.text("(pg_current_xact_id()::text::bigint)") if postgres else sa.text("0")),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"], name=op.f("fk_changes_org_id_organizations"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_changes")),
    )
    with op.batch_alter_table("changes") as batch:
        batch.create_index(batch.f("ix_changes_org_id"), ["org_id"], unique=False)
        batch.create_index("ix_changes_org_tx_seq", ["org_id", "tx", "seq"], unique=False)
    enable_rls(connection, "changes")
    enable_access_policies(connection, {"changes": ACCESS_RULES["changes"]})
    op.create_index("ix_messages_pending", "messages", ["created_at"], sqlite_where=sa.text("status = 'pending'"),
                    postgresql_where=sa.text("status = 'pending'"))


def downgrade() -> None:
    op.drop_index("ix_messages_pending", table_name="messages")
    connection = op.get_bind()
    disable_access_policies(connection, {"changes": ACCESS_RULES["changes"]})
    disable_rls(connection, "changes")
    op.drop_table("changes")
