"""The ``realtime`` section: the limits and the heartbeat of ``WS /ws`` (``atrium.realtime``). Composed
into ``Settings`` by ``atrium.settings``."""

from __future__ import annotations

from pydantic import BaseModel, Field


class RealtimeSettings(BaseModel):
    """Per-connection limits, the heartbeat, and what happens to a client that does not read.

    Socket counts are per process (each replica counts its own sockets). Every ``heartbeat_s`` the server
    sends a ``ping`` event; a socket from which nothing (a ``pong`` or any message) arrived for
    ``heartbeat_s + heartbeat_timeout_s`` is closed with 4408. Each socket has an outbound queue of
    ``outbox_events``; broadcast events that find it full are dropped and counted (the client gets a
    ``lagged`` event with the count once it reads again); after ``max_dropped`` dropped events in a row the
    socket is closed with 4008 (a client that never reads)."""

    max_sockets_per_user: int = Field(16, ge=1)  # per user (a key that acts as no user: per key)
    max_sockets_per_org: int = Field(2000, ge=1)
    max_subscriptions: int = Field(64, ge=1)  # agent threads one socket follows (``subscribe``)
    heartbeat_s: float = Field(25.0, gt=0)
    heartbeat_timeout_s: float = Field(20.0, gt=0)
    outbox_events: int = Field(256, ge=8)
    max_dropped: int = Field(2048, ge=1)
