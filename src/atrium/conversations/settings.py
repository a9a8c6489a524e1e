"""The ``streams`` section: the replay buffer of answer streams (``conversations/ports.py``). Composed into
``Settings`` by ``atrium.settings``."""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator


class StreamSettings(BaseModel):
    """How long an answer stream can be resumed, and how fast an abandoned one is noticed.

    An answer run renews its lease every ``heartbeat_s``; a stream without a final event whose lease is
    older than ``lease_s`` was abandoned (its process died): a reader then gets a typed error
    (``producer_lost``) and the message is marked failed. Streams are kept ``ttl_s`` after their last
    event, at most ``max_events`` events each (the oldest trimmed); later, a resume answers from the
    stored message. The buffer holds every recent answer's events (in memory without Redis): a short
    ``ttl_s`` keeps it small."""

    heartbeat_s: float = Field(2.0, gt=0)
    lease_s: float = Field(10.0, gt=0)
    ttl_s: float = Field(300.0, gt=0)
    max_events: int = Field(10_000, ge=100)

    @model_validator(mode="after")
    def _lease_outlives_heartbeats(self) -> StreamSettings:
        if self.lease_s < 2 * self.heartbeat_s:
            raise ValueError("streams.lease_s must be at least twice streams.heartbeat_s")
        return self
