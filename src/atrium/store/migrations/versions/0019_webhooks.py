"""Webhooks: an organisation's endpoints told of its jobs' ends (signed, Standard Webhooks).

* ``webhooks``: ``url``, ``events`` (JSON list), ``description``, the signing ``secret``, who made it
  (``user_id``, kept as null when the user goes; or ``api_key_id``), and the last delivery's outcome
  (``last_attempt_at``, ``last_status``, ``last_http_status``, ``last_error``, ``failures`` in a row).
* PostgreSQL: under ``tenant_isolation`` and a ``principal_access`` policy
  (``atrium.store.tenancy.WEBHOOK_ACCESS_RULES``: only unscoped admins and owners see them).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-06 18:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from atrium.store.tenancy import (
    WEBHOOK_ACCESS_RULES,
    disable_access_policies,
    disable_rls,
    enable_access_policies,
    enable_rls,
)

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webhooks",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("org_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=True),
        sa.Column("api_key_id", sa.String(length=32), nullable=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=True),
        sa.Column("secret", sa.String(length=100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status", sa.String(length=20), nullable=True),
        sa.Column("last_http_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=300), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"], name=op.f("fk_webhooks_org_id_organizations"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_webhooks_user_id_users"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhooks")),
    )
    with op.batch_alter_table("webhooks") as batch:
        batch.create_index(batch.f("ix_webhooks_org_id"), ["org_id"], unique=False)
        batch.create_index(batch.f("ix_webhooks_user_id"), ["user_id"], unique=False)

    connection = op.get_bind()
    enable_rls(connection, "webhooks")
    enable_access_policies(connection, WEBHOOK_ACCESS_RULES)


def downgrade() -> None:
    connection = op.get_bind()
    disable_access_policies(connection, WEBHOOK_ACCESS_RULES)
    disable_rls(connection, "webhooks")
    op.drop_table("webhooks")
