"""A covering index of chunks by id with their tenant and collection (``ix_chunks_id_org_collection``).

SQLite keyword search joins every FTS5 match to ``chunks`` only to check its ``org_id`` and ``collection``;
looking those up through this index instead of the table (whose rows carry the text and the embedding) halves
the query's time at 100k chunks (docs/benchmarks.md, issue 14). ``SqliteKeywordSearch`` names it with
``INDEXED BY``. Created on PostgreSQL too, where it is unused but keeps the schema the same.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 07:15:00
"""

from __future__ import annotations

from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_chunks_id_org_collection", "chunks", ["id", "org_id", "collection"])


def downgrade() -> None:
    op.drop_index("ix_chunks_id_org_collection", table_name="chunks")
