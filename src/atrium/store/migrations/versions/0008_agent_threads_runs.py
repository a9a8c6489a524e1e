"""The agents API's threads and runs (``/threads``, ``/threads/{thread_id}/runs``).

* ``agent_threads``: a LangGraph thread owned like a conversation (``user_id`` / ``api_key_id``,
  ``division_id``), ``visibility`` private (default) or org, metadata, status, and a copy of the state's
  values and interrupts after the last run;
* ``agent_runs``: one run of an assistant on a thread (status, multitask strategy, metadata, the run's
  request, its error).
* PostgreSQL: both under ``tenant_isolation`` and the ``principal_access`` policies of
  ``atrium.store.tenancy.AGENT_ACCESS_RULES``. The checkpoint tables are made by the LangGraph saver at
  start-up (``atrium.agents.checkpoints``), which puts them under a policy through ``agent_threads``; the
  downgrade drops those policies first, since they refer to this table.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05 16:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from atrium.store.tenancy import (
    AGENT_ACCESS_RULES,
    disable_access_policies,
    disable_rls,
    enable_access_policies,
    enable_rls,
)

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

CHECKPOINT_TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes")


def upgrade() -> None:
    op.create_table(
        "agent_threads",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=True),
        sa.Column("api_key_id", sa.String(length=32), nullable=True),
        sa.Column("division_id", sa.String(length=32), nullable=True),
        sa.Column("visibility", sa.String(length=10), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("values", sa.JSON(), nullable=True),
        sa.Column("interrupts", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"], name=op.f("fk_agent_threads_org_id_organizations"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_threads")),
    )
    with op.batch_alter_table("agent_threads") as batch:
        batch.create_index(batch.f("ix_agent_threads_org_id"), ["org_id"], unique=False)
        batch.create_index(batch.f("ix_agent_threads_user_id"), ["user_id"], unique=False)

    op.create_table(
        "agent_runs",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("org_id", sa.String(length=32), nullable=False),
        sa.Column("thread_id", sa.String(length=64), nullable=False),
        sa.Column("assistant_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("multitask_strategy", sa.String(length=20), nullable=False),
        sa.Column("metadata", sa.JSON(), nullable=False),
        sa.Column("kwargs", sa.JSON(), nullable=False),
        sa.Column("error", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"], name=op.f("fk_agent_runs_org_id_organizations"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["thread_id"], ["agent_threads.id"],
                                name=op.f("fk_agent_runs_thread_id_agent_threads"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_runs")),
    )
    with op.batch_alter_table("agent_runs") as batch:
        batch.create_index(batch.f("ix_agent_runs_org_id"), ["org_id"], unique=False)
        batch.create_index("ix_agent_runs_thread_created", ["thread_id", "created_at"], unique=False)

    connection = op.get_bind()
    enable_rls(connection, "agent_threads")
    enable_rls(connection, "agent_runs")
    enable_access_policies(connection, AGENT_ACCESS_RULES)


def downgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name == "postgresql":
        for table in CHECKPOINT_TABLES:
            if connection.scalar(sa.text("SELECT to_regclass(:name)"), {"name": table}) is not None:
                disable_rls(connection, table)
    disable_access_policies(connection, AGENT_ACCESS_RULES)
    disable_rls(connection, "agent_runs")
    disable_rls(connection, "agent_threads")
    op.drop_table("agent_runs")
    op.drop_table("agent_threads")
