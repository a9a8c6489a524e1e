"""Webhooks: where an organisation is told of its jobs' ends (``atrium.webhooks``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from atrium.store.models.base import Base, CreatedAt, OrgRef, OwnerKey, OwnerUser, RowId


class Webhook(Base):
    """An organisation's webhook: ``url`` receives the ``events`` it subscribed to, signed with ``secret``
    (Standard Webhooks, ``whsec_...``; shown once, when made). Made and removed by the organisation's
    admins; ``user_id``/``api_key_id`` record who made it. The last delivery's outcome is kept on the row
    (``last_status``: ``delivered`` or ``failed``; ``failures``: failed deliveries in a row)."""

    __tablename__ = "webhooks"
    id: Mapped[RowId]
    org_id: Mapped[OrgRef]
    user_id: Mapped[OwnerUser]
    api_key_id: Mapped[OwnerKey]
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JSON, default=list)
    description: Mapped[str | None] = mapped_column(String(200), default=None)
    secret: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[CreatedAt]
    last_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    last_status: Mapped[str | None] = mapped_column(String(20), default=None)
    last_http_status: Mapped[int | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(String(300), default=None)
    failures: Mapped[int] = mapped_column(default=0)

    def summary(self) -> dict[str, Any]:
        """What may be shown about the webhook (never the secret)."""
        return {"id": self.id, "url": self.url, "events": list(self.events)}
