"""The embedding cache (``knowledge/embedders/cache.py``): a tenant's vectors by model and text.

* ``embedding_cache``: ``org_id`` (deleted with the organisation), ``model`` (the fingerprint of the model
  and of the settings that shape its vectors), ``text_hash`` (sha256 of the text), ``vector`` (float32
  bytes), ``created_at``. The primary key (org, model, text hash) is the lookup: no other index.
* Per tenant, not shared across tenants: a shared entry would let one tenant learn, from how fast a text is
  embedded, whether another tenant holds it.
* PostgreSQL: under ``tenant_isolation`` (the service scope reads and writes it; principals never do).

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-06 18:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from atrium.store.tenancy import disable_rls, enable_rls

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "embedding_cache",
        sa.Column("org_id", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=32), nullable=False),
        sa.Column("text_hash", sa.String(length=64), nullable=False),
        sa.Column("vector", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"],
                                name=op.f("fk_embedding_cache_org_id_organizations"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("org_id", "model", "text_hash", name=op.f("pk_embedding_cache")),
    )
    enable_rls(op.get_bind(), "embedding_cache")


def downgrade() -> None:
    disable_rls(op.get_bind(), "embedding_cache")
    op.drop_table("embedding_cache")
