"""Reranking vectors (issue 14: the reranking stage over the fused candidates).

* ``chunks.rerank_embedding``: the chunk's vector by the reranking model (all-mpnet-base-v2), stored at
  ingestion while the reranker is on, so that a reranked search embeds only its query; null otherwise.
* ``collections.rerank_model``: the model those vectors were made with; a collection whose record names
  another model (or none) has its vectors made again by the ``rerank_vectors`` job.
* Plain ``ADD COLUMN`` (no batch copy of ``chunks``): on SQLite a copied table would lose the FTS triggers.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06 18:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("chunks", sa.Column("rerank_embedding", sa.LargeBinary(), nullable=True))
    op.add_column("collections", sa.Column("rerank_model", sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("collections") as batch:
        batch.drop_column("rerank_model")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE chunks DROP COLUMN rerank_embedding")
    else:
        op.drop_column("chunks", "rerank_embedding")
