"""The ``webhooks`` section: signed job-completion webhooks (``atrium.webhooks``). Composed into ``Settings``
by ``atrium.settings``."""

from __future__ import annotations

from pydantic import BaseModel, Field


class WebhookSettings(BaseModel):
    """Which URLs an organisation's admins may register, and how hard a delivery is tried.

    A webhook URL must be ``https`` (``allow_http``: ``http`` too) on a host whose every address the egress
    guard accepts (``allow_private``: private, loopback and link-local ones too; the ``egress`` allow-lists
    apply): checked when it is registered, and again, pinned, at every delivery. A delivery answered with a
    2xx is done; a 429, a 5xx, a timeout or a failed connection is tried again after an exponential backoff
    with jitter (``initial_backoff_s``, doubling up to ``max_backoff_s``; a longer ``Retry-After`` is waited
    for up to ``max_retry_after_s``), up to ``max_attempts`` tries; any other answer fails it at once.
    Redirects are not followed. Deliveries run beside the jobs, never holding one up (at most
    ``max_concurrent`` at once per process)."""

    enabled: bool = True
    allow_http: bool = False
    allow_private: bool = False
    max_per_org: int = Field(20, ge=1, le=1000)
    max_attempts: int = Field(5, ge=1, le=20)
    initial_backoff_s: float = Field(1.0, ge=0)
    max_backoff_s: float = Field(60.0, ge=0)
    max_retry_after_s: float = Field(120.0, ge=0)
    request_timeout_s: float = Field(10.0, gt=0)
    max_concurrent: int = Field(16, ge=1, le=1000)
