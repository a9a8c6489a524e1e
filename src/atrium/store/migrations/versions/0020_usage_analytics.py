"""Usage analytics (issue 15): covering indexes for the reports and the users' reset points.

* Three indexes of ``usage``, each carrying every column the reports read (``USAGE_COLUMNS_READ``), so a
  report reads one index range and never the table (8-10x faster at 200k rows on SQLite; figures in
  docs/benchmarks.md). PostgreSQL takes the extra columns as ``INCLUDE`` (index-only scans); SQLite, which
  has no ``INCLUDE``, as trailing key columns.

  - ``ix_usage_org_user_created`` (``org_id, user_id, created_at``): a user's own report;
  - ``ix_usage_org_created`` (``org_id, created_at``, made in 0001 without the extra columns, remade): an
    organisation's report;
  - ``ix_usage_created`` (``created_at``): the platform admin's report across organisations.

  On a large existing ``usage`` table the upgrade takes a while and blocks writes to it meanwhile (plain
  ``CREATE INDEX``); metering keeps its rows in memory through a short outage (``UsageRecorder``).
* ``usage_resets``: the points from which a user's analytics count (``POST
  /api/v1/analytics/user/{id}/reset``); usage rows are never deleted. Under ``tenant_isolation`` on
  PostgreSQL.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06 18:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from atrium.store.tenancy import disable_rls, enable_rls

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

# As in atrium.store.models.metering (kept here: a migration must not change when the models do).
_READ = ("org_id", "user_id", "api_key_id", "model", "endpoint", "provider", "outcome", "prompt_tokens",
         "completion_tokens", "cost_usd")
_INDEXES = {"ix_usage_org_created": ("org_id", "created_at"),
            "ix_usage_org_user_created": ("org_id", "user_id", "created_at"),
            "ix_usage_created": ("created_at",)}


def _create_covering(name: str, keys: tuple[str, ...]) -> None:
    rest = [column for column in _READ if column not in keys]
    if op.get_bind().dialect.name == "sqlite":
        op.create_index(name, "usage", [*keys, *rest])
    else:
        op.create_index(name, "usage", list(keys), postgresql_include=rest)


def upgrade() -> None:
    op.drop_index("ix_usage_org_created", table_name="usage")
    for name, keys in _INDEXES.items():
        _create_covering(name, keys)
    op.create_table(
        "usage_resets",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("org_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("reset_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor_user_id", sa.String(length=32), nullable=True),
        sa.Column("actor_key_id", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"],
                                name=op.f("fk_usage_resets_org_id_organizations"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_usage_resets_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_resets")),
    )
    op.create_index("ix_usage_resets_org_user_reset", "usage_resets", ["org_id", "user_id", "reset_at"])
    enable_rls(op.get_bind(), "usage_resets")


def downgrade() -> None:
    disable_rls(op.get_bind(), "usage_resets")
    op.drop_table("usage_resets")
    for name in _INDEXES:
        op.drop_index(name, table_name="usage")
    op.create_index("ix_usage_org_created", "usage", ["org_id", "created_at"])
