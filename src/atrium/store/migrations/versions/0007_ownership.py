"""Ownership and visibility inside an organisation, and invitations.

* ``conversations``, ``queries``: ``api_key_id`` (the owner when the key acts as no user) and
  ``division_id`` (the owner's division at creation); ``jobs``: ``user_id`` and ``api_key_id``;
  ``documents``: who uploaded it (``user_id``, ``api_key_id``).
* ``collections``: one row per (org, name) with its visibility (org, division, private), its writers
  (owner, readers) and owner. Existing collections become organisation-wide and writable by members, as
  they behaved before.
* ``invitations``: offers of a role to a user of any organisation, applied only when that user accepts.
* PostgreSQL: both new tables under ``tenant_isolation``; the ``principal_access`` policies
  (``atrium.store.tenancy.ACCESS_RULES``) narrow a principal's scope to what it owns or may read.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 19:00:00
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from atrium.store.tenancy import disable_access_policies, disable_rls, enable_access_policies, enable_rls

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversations") as batch:
        batch.add_column(sa.Column("api_key_id", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("division_id", sa.String(length=32), nullable=True))
        batch.create_index(batch.f("ix_conversations_user_id"), ["user_id"], unique=False)
    with op.batch_alter_table("queries") as batch:
        batch.add_column(sa.Column("api_key_id", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("division_id", sa.String(length=32), nullable=True))
        batch.create_index(batch.f("ix_queries_user_id"), ["user_id"], unique=False)
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("user_id", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("api_key_id", sa.String(length=32), nullable=True))
        batch.create_index(batch.f("ix_jobs_user_id"), ["user_id"], unique=False)
    with op.batch_alter_table("documents") as batch:
        batch.add_column(sa.Column("user_id", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("api_key_id", sa.String(length=32), nullable=True))
        batch.create_index(batch.f("ix_documents_user_id"), ["user_id"], unique=False)

    op.create_table(
        "collections",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("org_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("visibility", sa.String(length=10), nullable=False),
        sa.Column("writers", sa.String(length=10), nullable=False),
        sa.Column("division_id", sa.String(length=32), nullable=True),
        sa.Column("user_id", sa.String(length=32), nullable=True),
        sa.Column("api_key_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"], name=op.f("fk_collections_org_id_organizations"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_collections")),
        sa.UniqueConstraint("org_id", "name", name="uq_collections_org_name"),
    )
    with op.batch_alter_table("collections") as batch:
        batch.create_index(batch.f("ix_collections_org_id"), ["org_id"], unique=False)

    op.create_table(
        "invitations",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("org_id", sa.String(length=32), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("division_id", sa.String(length=32), nullable=True),
        sa.Column("invited_by_user_id", sa.String(length=32), nullable=True),
        sa.Column("invited_by_key_id", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"], name=op.f("fk_invitations_org_id_organizations"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["division_id"], ["divisions.id"],
                                name=op.f("fk_invitations_division_id_divisions"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invitations")),
    )
    with op.batch_alter_table("invitations") as batch:
        batch.create_index(batch.f("ix_invitations_org_id"), ["org_id"], unique=False)
        batch.create_index("ix_invitations_email_status", ["email", "status"], unique=False)

    # Every collection that already holds documents: organisation-wide, writable by members (as before).
    connection = op.get_bind()
    rows = connection.execute(sa.text("SELECT DISTINCT org_id, collection FROM documents")).all()
    collections = sa.table("collections", sa.column("id"), sa.column("org_id"), sa.column("name"),
                           sa.column("visibility"), sa.column("writers"), sa.column("created_at"))
    if rows:
        now = datetime.now(UTC)
        op.bulk_insert(collections, [{"id": uuid.uuid4().hex, "org_id": org_id, "name": name, "visibility": "org",
                                      "writers": "readers", "created_at": now} for org_id, name in rows])

    enable_rls(connection, "collections")
    enable_rls(connection, "invitations")
    enable_access_policies(connection)


def downgrade() -> None:
    connection = op.get_bind()
    disable_access_policies(connection)
    disable_rls(connection, "invitations")
    disable_rls(connection, "collections")
    op.drop_table("invitations")
    op.drop_table("collections")
    with op.batch_alter_table("documents") as batch:
        batch.drop_index(batch.f("ix_documents_user_id"))
        batch.drop_column("api_key_id")
        batch.drop_column("user_id")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index(batch.f("ix_jobs_user_id"))
        batch.drop_column("api_key_id")
        batch.drop_column("user_id")
    with op.batch_alter_table("queries") as batch:
        batch.drop_index(batch.f("ix_queries_user_id"))
        batch.drop_column("division_id")
        batch.drop_column("api_key_id")
    with op.batch_alter_table("conversations") as batch:
        batch.drop_index(batch.f("ix_conversations_user_id"))
        batch.drop_column("division_id")
        batch.drop_column("api_key_id")
