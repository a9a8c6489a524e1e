"""Usage analytics (issue 15): indexes for the reports and the users' reset points.

* ``ix_usage_org_user_created`` (``org_id, user_id, created_at``): a user's own report (``GET
  /api/v1/analytics/user``) reads one user's rows of a date range; without it the query walks every row
  of the organisation in the range (``ix_usage_org_created``) to keep the user's.
* ``ix_usage_created`` (``created_at``): the platform admin's report across organisations reads a date
  range of every organisation; without it, a full scan.
* ``usage_resets``: the points from which a user's analytics count (``POST
  /api/v1/analytics/user/{id}/reset``); the usage rows themselves are never deleted. Under
  ``tenant_isolation`` on PostgreSQL.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06 18:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from atrium.store.tenancy import disable_rls, enable_rls

revision = "0022"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_usage_org_user_created", "usage", ["org_id", "user_id", "created_at"])
    op.create_index("ix_usage_created", "usage", ["created_at"])
    op.create_table(
        "usage_resets",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("org_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("reset_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_user_id", sa.String(length=32), nullable=True),
        sa.Column("actor_key_id", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"],
                                name=op.f("fk_usage_resets_org_id_organizations"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_usage_resets_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_resets")),
    )
    op.create_index("ix_usage_resets_org_user_reset", "usage_resets", ["org_id", "user_id", "reset_at"])
    enable_rls(op.get_bind(), "usage_resets")


def downgrade() -> None:
    disable_rls(op.get_bind(), "usage_resets")
    op.drop_table("usage_resets")
    op.drop_index("ix_usage_created", table_name="usage")
    op.drop_index("ix_usage_org_user_created", table_name="usage")
