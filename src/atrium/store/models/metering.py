"""Metering: a usage record per model call, budgets, what each budget period spent, and the reservations
made before a call runs."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from atrium.store.models.base import Base, BigId, CreatedAt, OrgRef, RowId, utcnow

# Every column the analytics read: each of the usage indexes carries them all, so a report reads its index
# range alone, never the table (migration 0020; on SQLite, which has no INCLUDE, as trailing key columns).
USAGE_COLUMNS_READ = ("org_id", "user_id", "api_key_id", "model", "endpoint", "provider", "outcome",
                      "prompt_tokens", "completion_tokens", "cost_usd")


def covering_index(name: str, *keys: str) -> Index:
    return Index(name, *keys, postgresql_include=[c for c in USAGE_COLUMNS_READ if c not in keys])


class UsageRecord(Base):
    """One model or embedding call. The analytics (``atrium.analytics``) read these by organisation and
    time (``ix_usage_org_created``), by user and time (``ix_usage_org_user_created``) and, for the platform
    admin's report across organisations, by time alone (``ix_usage_created``); each index covers the
    columns the reports read."""

    __tablename__ = "usage"
    __table_args__ = (covering_index("ix_usage_org_created", "org_id", "created_at"),
                      covering_index("ix_usage_org_user_created", "org_id", "user_id", "created_at"),
                      covering_index("ix_usage_created", "created_at"))
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    user_id: Mapped[str | None] = mapped_column(String(32), default=None)
    api_key_id: Mapped[str | None] = mapped_column(String(32), default=None)
    provider: Mapped[str] = mapped_column(String(100))
    model: Mapped[str] = mapped_column(String(200))
    endpoint: Mapped[str] = mapped_column(String(200))
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    cost_usd: Mapped[float] = mapped_column(Float, default=0.0)
    latency_ms: Mapped[float] = mapped_column(Float, default=0.0)
    outcome: Mapped[str] = mapped_column(String(50))
    # True when the provider reported no usage and the tokens were counted offline.
    estimated: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[CreatedAt]


class UsageReset(Base):
    """A point from which a user's analytics count in one organisation (``POST
    /api/v1/analytics/user/{id}/reset``): the usage rows before it stay (bills and audits need them); the
    user's figures start from the latest reset. Budgets are separate and unchanged by it."""

    __tablename__ = "usage_resets"
    __table_args__ = (Index("ix_usage_resets_org_user_reset", "org_id", "user_id", "reset_at"),)
    id: Mapped[RowId]
    org_id: Mapped[str] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    reset_at: Mapped[datetime] = mapped_column(default=utcnow)
    actor_user_id: Mapped[str | None] = mapped_column(String(32), default=None)
    actor_key_id: Mapped[str | None] = mapped_column(String(32), default=None)


class Budget(Base):
    """A spending cap in micro-USD (1e-6 USD; integers, so sums are exact) for one org, user or key over a
    period: ``day``, ``month`` (UTC calendar windows) or ``total`` (never resets)."""

    __tablename__ = "budgets"
    __table_args__ = (UniqueConstraint("org_id", "scope", "subject_id", "period",
                                       name="uq_budgets_org_scope_subject_period"),)
    id: Mapped[RowId]
    org_id: Mapped[OrgRef]
    scope: Mapped[str] = mapped_column(String(10))  # org, user, key
    subject_id: Mapped[str] = mapped_column(String(32))
    period: Mapped[str] = mapped_column(String(10))  # day, month, total
    limit_micro_usd: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class BudgetSpend(Base):
    """What a budget has spent and holds reserved in one window (``2026-11-21``, ``2026-11`` or ``total``).
    A reservation is one conditional UPDATE, so concurrent calls cannot together pass the limit."""

    __tablename__ = "budget_spend"
    budget_id: Mapped[str] = mapped_column(ForeignKey("budgets.id", ondelete="CASCADE"), primary_key=True)
    window: Mapped[str] = mapped_column(String(16), primary_key=True)
    org_id: Mapped[OrgRef]
    spent_micro_usd: Mapped[int] = mapped_column(BigInteger, default=0)
    reserved_micro_usd: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class BudgetReservation(Base):
    """Money a running call holds in one budget's window, until it settles or ``expires_at`` passes (a
    process that died mid-call cannot block a budget for longer than that)."""

    __tablename__ = "budget_reservations"
    __table_args__ = (Index("ix_budget_reservations_budget_expires", "budget_id", "expires_at"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    budget_id: Mapped[str] = mapped_column(ForeignKey("budgets.id", ondelete="CASCADE"), primary_key=True)
    org_id: Mapped[OrgRef]
    window: Mapped[str] = mapped_column(String(16))
    amount_micro_usd: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime] = mapped_column()
    created_at: Mapped[CreatedAt]
