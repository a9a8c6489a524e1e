"""Notification devices: where a user (or a key acting as no user) receives push notifications.

* ``notification_devices``: owner (``user_id``, deleted with the user; or ``api_key_id``), ``kind``
  (``webpush`` or ``fcm``), the endpoint (a Web Push subscription URL or an FCM token) and its sha256,
  the Web Push keys (``p256dh``, ``auth``), a label, when it was registered and last reached.
* PostgreSQL: under ``tenant_isolation`` and the ``principal_access`` policy (``OWNER_MATCH``: a device is
  its owner's alone).

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 21:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from atrium.store.tenancy import disable_rls, enable_access_policies, enable_rls

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notification_devices",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("org_id", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=True),
        sa.Column("api_key_id", sa.String(length=32), nullable=True),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("endpoint", sa.Text(), nullable=False),
        sa.Column("endpoint_hash", sa.String(length=64), nullable=False),
        sa.Column("p256dh", sa.String(length=100), nullable=True),
        sa.Column("auth", sa.String(length=40), nullable=True),
        sa.Column("label", sa.String(length=100), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["org_id"], ["organizations.id"],
                                name=op.f("fk_notification_devices_org_id_organizations"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_notification_devices_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_devices")),
    )
    with op.batch_alter_table("notification_devices") as batch:
        batch.create_index(batch.f("ix_notification_devices_org_id"), ["org_id"], unique=False)
        batch.create_index(batch.f("ix_notification_devices_user_id"), ["user_id"], unique=False)
        batch.create_index("ix_notification_devices_org_hash", ["org_id", "endpoint_hash"], unique=False)

    connection = op.get_bind()
    enable_rls(connection, "notification_devices")
    enable_access_policies(connection)  # idempotent: adds the new table's policy


def downgrade() -> None:
    connection = op.get_bind()
    disable_rls(connection, "notification_devices")
    op.drop_table("notification_devices")  # its policies go with it
