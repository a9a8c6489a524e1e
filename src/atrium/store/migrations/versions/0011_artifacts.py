"""Artifacts: typed documents (markdown, code, checklist, table, JSON) with every edit kept as a version.

* ``artifacts``: owner (``user_id``, or ``api_key_id`` for a key acting as no user), ``division_id`` and
  ``visibility`` as the collections have them; kind, title, description, the current version's number and
  the conversation it came from (if any).
* ``artifact_versions``: one row per version (``artifact_id``, ``number``), never changed once written.
* PostgreSQL: both under ``tenant_isolation``, and the ``principal_access`` policies
  (``atrium.store.tenancy.ACCESS_RULES``): an artifact as readable as a collection with its visibility, a
  version when its artifact is.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 16:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from atrium.store.tenancy import disable_rls, enable_access_policies, enable_rls

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "artifacts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("org_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=True),
        sa.Column("api_key_id", sa.String(length=32), nullable=True),
        sa.Column("division_id", sa.String(length=32), nullable=True),
        sa.Column("visibility", sa.String(length=10), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("current_version", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"], name=op.f("fk_artifacts_org_id_organizations"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_artifacts_user_id_users"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversations.id"],
                                name=op.f("fk_artifacts_conversation_id_conversations"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifacts")),
    )
    with op.batch_alter_table("artifacts") as batch:
        batch.create_index(batch.f("ix_artifacts_org_id"), ["org_id"], unique=False)
        batch.create_index(batch.f("ix_artifacts_user_id"), ["user_id"], unique=False)
        batch.create_index(batch.f("ix_artifacts_conversation_id"), ["conversation_id"], unique=False)
        batch.create_index("ix_artifacts_org_updated", ["org_id", "updated_at"], unique=False)

    op.create_table(
        "artifact_versions",
        sa.Column("artifact_id", sa.String(length=32), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("org_id", sa.String(length=32), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("content", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["artifact_id"], ["artifacts.id"],
                                name=op.f("fk_artifact_versions_artifact_id_artifacts"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"],
                                name=op.f("fk_artifact_versions_org_id_organizations"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("artifact_id", "number", name=op.f("pk_artifact_versions")),
    )
    with op.batch_alter_table("artifact_versions") as batch:
        batch.create_index(batch.f("ix_artifact_versions_org_id"), ["org_id"], unique=False)

    connection = op.get_bind()
    enable_rls(connection, "artifacts")
    enable_rls(connection, "artifact_versions")
    enable_access_policies(connection)  # idempotent: adds the two new tables' policies


def downgrade() -> None:
    connection = op.get_bind()
    disable_rls(connection, "artifact_versions")
    disable_rls(connection, "artifacts")
    op.drop_table("artifact_versions")  # their policies go with them
    op.drop_table("artifacts")
