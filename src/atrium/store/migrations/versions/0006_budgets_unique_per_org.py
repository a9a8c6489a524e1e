"""Budgets are unique per (org, scope, subject, period): a user who belongs to two organisations may have a
user budget in each.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-21 11:00:00
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("budgets") as batch:
        batch.drop_constraint("uq_budgets_scope_subject_period", type_="unique")
        batch.create_unique_constraint("uq_budgets_org_scope_subject_period",
                                       ["org_id", "scope", "subject_id", "period"])


def downgrade() -> None:
    with op.batch_alter_table("budgets") as batch:
        batch.drop_constraint("uq_budgets_org_scope_subject_period", type_="unique")
        batch.create_unique_constraint("uq_budgets_scope_subject_period", ["scope", "subject_id", "period"])
