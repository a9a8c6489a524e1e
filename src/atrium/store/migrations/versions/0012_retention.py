"""Artifacts remember the agent thread that made them (``agent_thread_id``), so deleting or expiring the
thread erases them too. No foreign key: an artifact outlives nothing by it, the thread's erasure deletes
it explicitly (with its vectors, which the database cannot reach).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 21:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("artifacts") as batch:
        batch.add_column(sa.Column("agent_thread_id", sa.String(64), nullable=True))
        batch.create_index("ix_artifacts_agent_thread_id", ["agent_thread_id"])


def downgrade() -> None:
    with op.batch_alter_table("artifacts") as batch:
        batch.drop_index("ix_artifacts_agent_thread_id")
        batch.drop_column("agent_thread_id")
