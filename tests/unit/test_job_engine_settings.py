"""Which job engine runs where: ``jobs.engine`` (auto by the database) and ``jobs.run_in_api``."""

from __future__ import annotations

import pytest

from atrium.jobs.settings import JobSettings, job_engine, runs_in_api


def test_auto_picks_procrastinate_on_postgresql_and_the_embedded_worker_on_sqlite() -> None:
    assert job_engine(JobSettings(), is_sqlite=True) == "embedded"
    assert job_engine(JobSettings(), is_sqlite=False) == "procrastinate"
    assert job_engine(JobSettings(engine="embedded"), is_sqlite=False) == "embedded"


def test_procrastinate_needs_postgresql() -> None:
    with pytest.raises(ValueError, match="PostgreSQL"):
        job_engine(JobSettings(engine="procrastinate"), is_sqlite=True)


def test_the_api_runs_jobs_when_embedded_and_leaves_them_to_workers_with_procrastinate_unless_told() -> None:
    assert runs_in_api(JobSettings(), "embedded") is True
    assert runs_in_api(JobSettings(), "procrastinate") is False
    assert runs_in_api(JobSettings(run_in_api=True), "procrastinate") is True
    assert runs_in_api(JobSettings(run_in_api=False), "embedded") is False


def test_concurrency_is_bounded() -> None:
    with pytest.raises(ValueError):
        JobSettings(concurrency=0)
