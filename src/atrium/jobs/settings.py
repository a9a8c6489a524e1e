"""The ``jobs`` section: leases, heartbeats, retries of the job worker (``atrium.jobs.queue``), which engine
dispatches jobs and where they run. Composed into ``Settings`` by ``atrium.settings``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator

JobEngine = Literal["embedded", "procrastinate"]


class JobSettings(BaseModel):
    """A worker holds the job it runs by a lease of ``lease_s`` seconds, renewed every ``heartbeat_s`` while the
    handler runs; only a job whose lease has expired (its process died or hangs) is taken by another worker.
    A job that fails from an unexpected error is retried after ``backoff_base_s * 2 ** (attempt - 1)`` seconds
    (at most ``backoff_max_s``), up to ``max_attempts`` runs in all; then it fails for good (dead-lettered).
    A typed failure (bad input) is not retried.

    ``engine``: ``embedded`` runs jobs with the in-process worker over the job table (``jobs/queue.py``);
    ``procrastinate`` hands dispatch, locking, retries and dead-letter to procrastinate on PostgreSQL
    (``jobs/procrastinate_queue.py``), run as ``atrium worker`` processes; ``auto``: procrastinate on
    PostgreSQL, embedded on SQLite. ``run_in_api``: whether the API process runs jobs too (default: yes with the
    embedded engine, no with procrastinate). ``concurrency``: jobs one worker process runs at once
    (procrastinate; the embedded worker runs one at a time). ``health_port``: where an ``atrium worker``
    serves its probes, ``GET /health`` and ``GET /ready`` (``jobs/health.py``; off when unset), on
    ``health_host``."""

    engine: Literal["auto", "embedded", "procrastinate"] = "auto"
    run_in_api: bool | None = None
    concurrency: int = Field(1, ge=1, le=64)
    health_port: int | None = Field(None, ge=1, le=65535)
    health_host: str = "127.0.0.1"

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


def job_engine(settings: JobSettings, *, is_sqlite: bool) -> JobEngine:
    """The engine ``settings.engine`` names, ``auto`` resolved by the database (procrastinate needs PostgreSQL)."""
    if settings.engine == "procrastinate" and is_sqlite:
        raise ValueError("jobs.engine=procrastinate needs a PostgreSQL database_url")
    if settings.engine == "auto":
        return "embedded" if is_sqlite else "procrastinate"
    return settings.engine


def runs_in_api(settings: JobSettings, engine: JobEngine) -> bool:
    """Whether the API process works the queue itself (``jobs.run_in_api``, by default only when embedded)."""
    return settings.run_in_api if settings.run_in_api is not None else engine == "embedded"
