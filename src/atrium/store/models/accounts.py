"""The accounts tables: organisations, divisions, users and their memberships, API keys, refresh tokens,
invitations, the audit log, tenant policies and users' notification devices."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from atrium.store.models.base import Base, BigId, CreatedAt, OrgRef, OwnerKey, RowId, utcnow


class Organization(Base):
    __tablename__ = "organizations"
    id: Mapped[RowId]
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[CreatedAt]


class Division(Base):
    """A part of an organisation (a team, a department); keys, memberships and budgets may be scoped to one."""

    __tablename__ = "divisions"
    __table_args__ = (UniqueConstraint("org_id", "name", name="uq_divisions_org_name"),)
    id: Mapped[RowId]
    org_id: Mapped[OrgRef]
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[CreatedAt]


class User(Base):
    """A person (or, with ``is_service``, a service account that only ever authenticates with API keys).
    ``org_id`` is the home organisation; ``memberships`` say where the user may act, and with what role."""

    __tablename__ = "users"
    id: Mapped[RowId]
    org_id: Mapped[OrgRef]
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(20), default="member")
    password_hash: Mapped[str | None] = mapped_column(String(200), default=None)
    # A handle chosen at onboarding (``agents/flows``), unique across the platform; None for older accounts.
    username: Mapped[str | None] = mapped_column(String(40), unique=True, default=None)
    interests: Mapped[list[str] | None] = mapped_column(JSON, default=None)
    is_service: Mapped[bool] = mapped_column(default=False)
    disabled_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[CreatedAt]


class Membership(Base):
    """A user's role in an organisation, optionally narrowed to one division."""

    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("user_id", "org_id", name="uq_memberships_user_org"),)
    id: Mapped[RowId]
    org_id: Mapped[OrgRef]
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    division_id: Mapped[str | None] = mapped_column(ForeignKey("divisions.id", ondelete="SET NULL"), default=None)
    role: Mapped[str] = mapped_column(String(20), default="member")
    created_at: Mapped[CreatedAt]


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[RowId]
    org_id: Mapped[OrgRef]
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), default=None)
    division_id: Mapped[str | None] = mapped_column(ForeignKey("divisions.id", ondelete="SET NULL"), default=None)
    name: Mapped[str] = mapped_column(String(200), default="")
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(20), default="member")
    # The key's own limits (None: only the user and org limits apply).
    requests_per_minute: Mapped[int | None] = mapped_column(Integer, default=None)
    tokens_per_minute: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[CreatedAt]
    expires_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class RefreshToken(Base):
    """One refresh token of a login session (``family_id``). Each use rotates it: the row is marked used
    and a new one is issued in the same family; presenting a used token again revokes the whole family
    (it was stolen). Only the SHA-256 of the token is stored."""

    __tablename__ = "refresh_tokens"
    id: Mapped[RowId]
    org_id: Mapped[OrgRef]
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    division_id: Mapped[str | None] = mapped_column(String(32), default=None)
    family_id: Mapped[str] = mapped_column(String(32), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[CreatedAt]
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Invitation(Base):
    """An offer of a role in ``org_id`` to whoever holds ``email``. Nothing changes until that user accepts
    (``accepted_at``); an org never adds another org's user by itself. ``status``: pending, accepted,
    declined, revoked."""

    __tablename__ = "invitations"
    __table_args__ = (Index("ix_invitations_email_status", "email", "status"),)
    id: Mapped[RowId]
    org_id: Mapped[OrgRef]
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[str] = mapped_column(String(20), default="member")
    division_id: Mapped[str | None] = mapped_column(ForeignKey("divisions.id", ondelete="CASCADE"), default=None)
    invited_by_user_id: Mapped[str | None] = mapped_column(String(32), default=None)
    invited_by_key_id: Mapped[str | None] = mapped_column(String(32), default=None)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    created_at: Mapped[CreatedAt]
    expires_at: Mapped[datetime] = mapped_column()
    answered_at: Mapped[datetime | None] = mapped_column(default=None)


class AuditEvent(Base):
    """Append-only record of security-relevant actions (logins, keys, roles, policies, admin actions).
    Database triggers refuse UPDATE and DELETE. ``org_id`` is a plain column, not a foreign key, so the
    trail outlives a deleted organisation. Never holds a secret: ``accounts/audit.py`` scrubs details."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_org_created", "org_id", "created_at"),)
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    org_id: Mapped[str | None] = mapped_column(String(32), default=None)
    actor_user_id: Mapped[str | None] = mapped_column(String(32), default=None)
    actor_key_id: Mapped[str | None] = mapped_column(String(32), default=None)
    action: Mapped[str] = mapped_column(String(100))
    target_type: Mapped[str | None] = mapped_column(String(50), default=None)
    target_id: Mapped[str | None] = mapped_column(String(64), default=None)
    outcome: Mapped[str] = mapped_column(String(20), default="success")
    details: Mapped[dict[str, Any] | None] = mapped_column(default=None)
    ip: Mapped[str | None] = mapped_column(String(64), default=None)
    request_id: Mapped[str | None] = mapped_column(String(64), default=None)
    created_at: Mapped[CreatedAt]


class OrgPolicy(Base):
    """Per-organisation guard policy (PII, moderation, injection), set by admins; it overrides the
    configured defaults key by key."""

    __tablename__ = "org_policies"
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True)
    policy: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class NotificationDevice(Base):
    """A device its owner (``user_id``, or ``api_key_id`` for a key acting as no user) receives push
    notifications on: a Web Push subscription (``endpoint``, ``p256dh``, ``auth``) or an FCM registration
    token (in ``endpoint``). ``endpoint_hash`` (sha256) finds a re-registered device. See
    ``atrium.notifications``."""

    __tablename__ = "notification_devices"
    __table_args__ = (Index("ix_notification_devices_org_hash", "org_id", "endpoint_hash"),)
    id: Mapped[RowId]
    org_id: Mapped[OrgRef]
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), default=None,
                                                index=True)
    api_key_id: Mapped[OwnerKey]
    kind: Mapped[str] = mapped_column(String(10))  # webpush, fcm
    endpoint: Mapped[str] = mapped_column(Text)
    endpoint_hash: Mapped[str] = mapped_column(String(64))
    p256dh: Mapped[str | None] = mapped_column(String(100), default=None)
    auth: Mapped[str | None] = mapped_column(String(40), default=None)
    label: Mapped[str | None] = mapped_column(String(100), default=None)
    created_at: Mapped[CreatedAt]
    last_delivered_at: Mapped[datetime | None] = mapped_column(default=None)
