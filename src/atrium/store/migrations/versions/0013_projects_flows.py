"""Project records and what guided onboarding keeps about a new account.

* ``projects``: owner (``user_id``, or ``api_key_id`` for a key acting as no user), ``division_id``,
  ``visibility`` (``org`` or ``private``), title (at most 100 characters), description and kind. Made by
  the ``project`` guided flow and the assistant's ``create_project`` tool (``atrium.agents.projects``).
* ``users.username`` (unique, nullable: accounts made before have none) and ``users.interests`` (JSON),
  chosen in the ``onboarding`` guided flow.
* PostgreSQL: ``projects`` under ``tenant_isolation`` and the ``principal_access`` policy (readable as an
  artifact: the organisation's, or its owner's when private; ``atrium.store.tenancy.ACCESS_RULES``).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 21:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from atrium.store.tenancy import ACCESS_RULES, disable_rls, enable_access_policies, enable_rls

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("org_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=True),
        sa.Column("api_key_id", sa.String(length=32), nullable=True),
        sa.Column("division_id", sa.String(length=32), nullable=True),
        sa.Column("visibility", sa.String(length=10), nullable=False),
        sa.Column("title", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=30), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"], name=op.f("fk_projects_org_id_organizations"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_projects_user_id_users"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
    )
    with op.batch_alter_table("projects") as batch:
        batch.create_index(batch.f("ix_projects_org_id"), ["org_id"], unique=False)
        batch.create_index(batch.f("ix_projects_user_id"), ["user_id"], unique=False)
        batch.create_index("ix_projects_org_created", ["org_id", "created_at"], unique=False)
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("username", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("interests", sa.JSON(), nullable=True))
        batch.create_unique_constraint(batch.f("uq_users_username"), ["username"])

    connection = op.get_bind()
    enable_rls(connection, "projects")
    enable_access_policies(connection, {"projects": ACCESS_RULES["projects"]})


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint(batch.f("uq_users_username"), type_="unique")
        batch.drop_column("interests")
        batch.drop_column("username")
    disable_rls(op.get_bind(), "projects")
    op.drop_table("projects")
