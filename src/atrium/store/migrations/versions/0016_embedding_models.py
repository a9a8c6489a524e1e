"""Each collection records the embedding model and dimension its vectors were made with
(``atrium.knowledge.reembed``): a start-up with another model re-embeds the collection in the background.

* ``collections.embedding_model`` / ``embedding_dimensions``: null until the collection's first chunks
  (and for collections made before this revision: adopted at the next start-up).
* No new table: ``collections`` stays under its row-level security policies.

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 06:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("collections") as batch:
        batch.add_column(sa.Column("embedding_model", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("embedding_dimensions", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("collections") as batch:
        batch.drop_column("embedding_dimensions")
        batch.drop_column("embedding_model")
