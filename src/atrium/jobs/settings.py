"""The ``jobs`` section: leases, heartbeats, retries of the in-process job worker (``atrium.jobs.queue``).
Composed into ``Settings`` by ``atrium.settings``."""

from __future__ import annotations

from pydantic import BaseModel, Field, model_validator


class JobSettings(BaseModel):
    """A worker holds the job it runs by a lease of ``lease_s`` seconds, renewed every ``heartbeat_s`` while the
    handler runs; only a job whose lease has expired (its process died or hangs) is taken by another worker.
    A job that fails from an unexpected error is retried after ``backoff_base_s * 2 ** (attempt - 1)`` seconds
    (at most ``backoff_max_s``), up to ``max_attempts`` runs in all; then it fails for good (dead-lettered).
    A typed failure (bad input) is not retried."""

    lease_s: float = Field(60.0, gt=0)
    heartbeat_s: float = Field(15.0, gt=0)
    max_attempts: int = Field(3, ge=1)
    backoff_base_s: float = Field(5.0, ge=0)
    backoff_max_s: float = Field(600.0, ge=0)
    poll_interval_s: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _heartbeat_within_lease(self) -> JobSettings:
        if self.heartbeat_s >= self.lease_s:
            raise ValueError("jobs.heartbeat_s must be shorter than jobs.lease_s")
        return self
