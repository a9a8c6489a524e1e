"""Job leases, retries, cancellation and idempotency keys (``atrium.jobs.queue``).

* ``jobs.lease_owner`` / ``lease_expires_at``: the worker holding a running job and until when (renewed by
  its heartbeat); only an expired lease is taken back by another process.
* ``jobs.run_after``: a job waiting for its retry's backoff is not claimed before then.
* ``jobs.cancel_requested``: the owner asked a running job to stop.
* ``jobs.idempotency_key``: unique per organisation (``uq_jobs_org_idempotency_key``; nulls do not clash).
* No new table: ``jobs`` stays under its row-level security policies.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 04:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("run_after", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("cancel_requested", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("idempotency_key", sa.String(length=200), nullable=True))
        batch.create_index("uq_jobs_org_idempotency_key", ["org_id", "idempotency_key"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("uq_jobs_org_idempotency_key")
        for column in ("idempotency_key", "cancel_requested", "run_after", "lease_expires_at", "lease_owner"):
            batch.drop_column(column)
