"""Chunk pages and document types (issue 14: page numbers in citations, metadata filters).

* ``chunks.page``: the PDF page a chunk comes from (null for documents without pages).
* ``documents.file_type``: ``pdf``, ``html``, ``md``, ``txt``, ``docx``, ``csv`` (or empty), what the
  ``type`` search filter matches; existing rows take it from their source's suffix.
* Plain ``ADD COLUMN`` (no batch copy of ``chunks``): on SQLite a copied table would lose the FTS triggers.
* No new table: both stay under their row-level security policies.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-06 07:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

_SUFFIXES = {"pdf": ("pdf",), "html": ("html", "htm"), "md": ("md", "markdown"), "txt": ("txt", "text"),
             "docx": ("docx",), "csv": ("csv", "tsv")}


def upgrade() -> None:
    op.add_column("chunks", sa.Column("page", sa.Integer(), nullable=True))
    op.add_column("documents", sa.Column("file_type", sa.String(length=10), nullable=False, server_default=""))
    op.create_index("ix_documents_org_file_type", "documents", ["org_id", "file_type"])
    for file_type, suffixes in _SUFFIXES.items():
        for suffix in suffixes:
            op.execute(sa.text("UPDATE documents SET file_type = :type WHERE lower(source) LIKE :pattern")
                       .bindparams(type=file_type, pattern=f"%.{suffix}"))


def downgrade() -> None:
    op.drop_index("ix_documents_org_file_type", table_name="documents")
    with op.batch_alter_table("documents") as batch:
        batch.drop_column("file_type")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("ALTER TABLE chunks DROP COLUMN page")
    else:
        op.drop_column("chunks", "page")
