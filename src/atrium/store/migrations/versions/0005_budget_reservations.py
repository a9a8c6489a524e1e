"""Budget reservations: what each running model call holds in a budget window, and until when (a call whose
process died is released once its reservation expires). Under Row-Level Security like every tenant table.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21 14:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from atrium.store.tenancy import disable_rls, enable_rls

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "budget_reservations",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("budget_id", sa.String(length=32), nullable=False),
        sa.Column("org_id", sa.String(length=32), nullable=False),
        sa.Column("window", sa.String(length=16), nullable=False),
        sa.Column("amount_micro_usd", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["budget_id"], ["budgets.id"],
                                name=op.f("fk_budget_reservations_budget_id_budgets"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"],
                                name=op.f("fk_budget_reservations_org_id_organizations"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", "budget_id", name=op.f("pk_budget_reservations")),
    )
    with op.batch_alter_table("budget_reservations", schema=None) as batch_op:
        batch_op.create_index("ix_budget_reservations_budget_expires", ["budget_id", "expires_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_budget_reservations_org_id"), ["org_id"], unique=False)
    enable_rls(op.get_bind(), "budget_reservations")


def downgrade() -> None:
    disable_rls(op.get_bind(), "budget_reservations")
    op.drop_table("budget_reservations")
