"""The ``agents`` section: how much of each thread's history the checkpointer keeps, and for how long.
Composed into ``Settings`` by ``atrium.settings``."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, Field


class AgentSettings(BaseModel):
    """Retention of agent threads (see docs/agents.md, "Retention").

    ``checkpoints_keep_last``: after each run, a thread keeps its newest N checkpoints (with their pending
    writes and, on PostgreSQL, the channel blobs they use); older ones are erased, so history and rollback
    (``checkpoint_id``) reach only the last N. ``0`` keeps every checkpoint. ``thread_ttl``: a thread not
    updated for longer than this (seconds, or ISO 8601 like ``P30D``) is erased whole by a periodic sweep
    every ``sweep_interval_s``; unset: threads live until deleted."""

    checkpoints_keep_last: int = Field(20, ge=0)
    thread_ttl: timedelta | None = None
    sweep_interval_s: float = Field(300.0, gt=0)
    sweep_batch: int = Field(100, ge=1, le=10_000)
