"""The agents API's threads and runs (their state lives in the LangGraph checkpointer under the thread id)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from atrium.store.models.base import Base, CreatedAt, OrgRef, OwnerDivision, OwnerKey, new_id, utcnow


class AgentThread(Base):
    """A LangGraph thread (the agents API, ``/threads``): its state lives in the checkpointer under its id.
    Owned like a conversation (``user_id``, or ``api_key_id`` for a key that acts as no user);
    ``visibility`` ``private`` (its owner only) or ``org`` (readable by the organisation, written by its
    owner). ``values`` and ``interrupts`` copy the state after the last run, for search and listing."""

    __tablename__ = "agent_threads"
    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    org_id: Mapped[OrgRef]
    user_id: Mapped[str | None] = mapped_column(String(32), default=None, index=True)
    api_key_id: Mapped[OwnerKey]
    division_id: Mapped[OwnerDivision]
    visibility: Mapped[str] = mapped_column(String(10), default="private")  # private, org
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    status: Mapped[str] = mapped_column(String(20), default="idle")  # idle, busy, interrupted, error
    values: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    interrupts: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AgentRun(Base):
    """One run of an assistant's graph on a thread. ``status``: pending, running, success, error,
    interrupted (the graph waits for input), cancelled. Its output is the thread's state in the
    checkpointer; ``error`` holds ``{code, message}`` of a failed run."""

    __tablename__ = "agent_runs"
    __table_args__ = (Index("ix_agent_runs_thread_created", "thread_id", "created_at"),)
    id: Mapped[str] = mapped_column(String(64), primary_key=True, default=new_id)
    org_id: Mapped[OrgRef]
    thread_id: Mapped[str] = mapped_column(ForeignKey("agent_threads.id", ondelete="CASCADE"))
    assistant_id: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    multitask_strategy: Mapped[str] = mapped_column(String(20), default="reject")
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    kwargs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    created_at: Mapped[CreatedAt]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
