"""Real ``atrium worker`` processes against one database, for the crash and two-worker checks (tests and
``bench/worker_crash.py``).

A profile is a data dir plus its database: ``embedded`` (SQLite in the data dir, the in-process worker over the
job table) or ``procrastinate`` (PostgreSQL, the application role under RLS, procrastinate dispatching). Jobs are
queued through the service (``services.jobs.enqueue``, as ``POST /api/v1/documents`` does, files saved in the
uploads folder first); workers are subprocesses running the CLI; the verdict is read from the database: per
uploaded file, exactly one document whose chunks are the chunker's count with no ordinal twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from atrium.accounts.ownership import Owner
from atrium.container import Services, build_services, close_services, migrate
from atrium.knowledge.chunking import chunk_text
from atrium.settings import Settings
from atrium.store.models import Chunk, Document, Job, Organization

SRC = Path(__file__).resolve().parents[1] / "src"
ORG = "org-crash"
OWNER = Owner("user-crash", None)
COLLECTION = "crash"
# Short leases so a dead worker's job is taken up within seconds.
JOB_ENV = {"ATRIUM_JOBS__LEASE_S": "3", "ATRIUM_JOBS__HEARTBEAT_S": "0.5", "ATRIUM_JOBS__POLL_INTERVAL_S": "0.2",
           "ATRIUM_JOBS__BACKOFF_BASE_S": "0.2"}


@dataclass
class Profile:
    name: str  # embedded | procrastinate
    data_dir: Path
    database_url: str | None = None  # None: SQLite in the data dir
    migration_database_url: str | None = None

    def env(self) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("ATRIUM_")}
        env.update(JOB_ENV)
        env.update({"PYTHONPATH": str(SRC), "ATRIUM_DATA_DIR": str(self.data_dir), "ATRIUM_CHAT__PROVIDER": "fake",
                    "ATRIUM_EMBEDDING__PROVIDER": "hash", "ATRIUM_KNOWLEDGE__DEMO_COLLECTION": "false",
                    "ATRIUM_JOBS__ENGINE": self.name, "ATRIUM_LOG_LEVEL": "info"})
        if self.database_url is not None:
            env["ATRIUM_DATABASE_URL"] = self.database_url
        if self.migration_database_url is not None:
            env["ATRIUM_MIGRATION_DATABASE_URL"] = self.migration_database_url
        return env

    def settings(self) -> Settings:
        values: dict[str, Any] = {
            "data_dir": self.data_dir, "chat": {"provider": "fake"}, "embedding": {"provider": "hash"},
            "knowledge": {"demo_collection": False},
            "jobs": {"engine": self.name, "lease_s": 3, "heartbeat_s": 0.5, "poll_interval_s": 0.2,
                     "backoff_base_s": 0.2}}
        if self.database_url is not None:
            values["database_url"] = self.database_url
        if self.migration_database_url is not None:
            values["migration_database_url"] = self.migration_database_url
        return Settings(**values)


def start_worker(profile: Profile, name: str, *, extra_env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """``atrium worker`` in a new process; its output goes to ``<data dir>/<name>.log``."""
    profile.data_dir.mkdir(parents=True, exist_ok=True)
    with (profile.data_dir / f"{name}.log").open("ab") as log:
        return subprocess.Popen([sys.executable, "-c", "from atrium.cli import main; main()", "worker"],
                                env={**profile.env(), **(extra_env or {})}, stdout=log, stderr=subprocess.STDOUT)


async def wait_ready(profile: Profile, name: str, *, timeout_s: float = 60.0) -> None:
    """Until the worker's log says it is ready (migrated, services built, its queue worked)."""
    deadline = time.monotonic() + timeout_s
    path = profile.data_dir / f"{name}.log"
    while "worker ready" not in (path.read_text(errors="replace") if path.exists() else ""):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{name} did not start: {path.read_text(errors='replace')[-2000:]}")
        await asyncio.sleep(0.1)


def stop_worker(process: subprocess.Popen[bytes], *, timeout_s: float = 30.0) -> int:
    """SIGTERM, then wait for it to finish (its running job first)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def corpus(job: int, files: int, paragraphs: int) -> dict[str, str]:
    """Markdown files of a few chunks each, every text distinct (a duplicate would not hide in a dedup)."""
    out = {}
    for number in range(files):
        body = "\n\n".join(
            f"## Part {part}\n\n" + " ".join(f"job{job} file{number} part{part} word{word} lorem ipsum dolor"
                                             for word in range(60))
            for part in range(paragraphs))
        out[f"j{job:03d}-f{number:04d}.md"] = f"# Document {job}-{number}\n\n{body}\n"
    return out


class Harness:
    """Services built in this process to queue jobs and read the outcome; it runs no job itself."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.settings = profile.settings()
        self.services: Services | None = None
        self.sent: dict[str, dict[str, str]] = {}  # job id -> {source: text}

    async def __aenter__(self) -> Harness:
        await migrate(self.settings)
        self.services = await build_services(self.settings)
        async with self.services.db.system_session() as session:
            if await session.get(Organization, ORG) is None:
                session.add(Organization(id=ORG, name="crash"))
        return self

    async def __aexit__(self, *_: object) -> None:
        if self.services is not None:
            await close_services(self.services, reconcile=False)

    @property
    def svc(self) -> Services:
        assert self.services is not None
        return self.services

    async def enqueue(self, files: dict[str, str]) -> str:
        """Save ``files`` as an upload does and queue their ingestion."""
        folder = uuid.uuid4().hex
        (self.settings.uploads_dir / folder).mkdir(parents=True)
        stored = []
        for number, (source, body) in enumerate(files.items()):
            stored_as = f"{number:04d}-{source}"
            (self.settings.uploads_dir / folder / stored_as).write_text(body)
            stored.append({"stored_as": stored_as, "source": source})
        job_id = await self.svc.jobs.enqueue(ORG, "ingest", {"collection": COLLECTION, "folder": folder,
                                                             "files": stored}, owner=OWNER)
        self.sent[job_id] = files
        return job_id

    async def job(self, job_id: str) -> Job:
        return await self.svc.jobs.get(ORG, job_id, owner=OWNER)

    async def wait_for(self, job_ids: list[str], predicate: Any, *, timeout_s: float) -> list[Job]:
        deadline = time.monotonic() + timeout_s
        while True:
            jobs = [await self.job(job_id) for job_id in job_ids]
            if all(predicate(job) for job in jobs):
                return jobs
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs still {[(job.status, round(job.progress, 2)) for job in jobs]}")
            await asyncio.sleep(0.1)

    async def verdict(self) -> Verdict:
        """Per file sent: its documents and chunks in the database against the chunker's own count."""
        knowledge = self.settings.knowledge
        embedder = self.svc.embedder
        async with self.svc.db.tenant_session(ORG) as session:
            documents: dict[str, list[str]] = {}
            for doc_id, source in (await session.execute(
                    select(Document.id, Document.source).where(Document.org_id == ORG,
                                                               Document.collection == COLLECTION))).all():
                documents.setdefault(source, []).append(doc_id)
            per_doc = dict((await session.execute(
                select(Chunk.document_id, func.count()).where(Chunk.org_id == ORG).group_by(Chunk.document_id))).all())
            distinct = dict((await session.execute(
                select(Chunk.document_id, func.count(func.distinct(Chunk.ordinal))).where(Chunk.org_id == ORG)
                .group_by(Chunk.document_id))).all())
        verdict = Verdict()
        for files in self.sent.values():
            for source, body in files.items():
                expected = len(chunk_text(body, embedder.count_tokens, max_tokens=knowledge.chunk_tokens,
                                          overlap_tokens=knowledge.chunk_overlap, max_chars=knowledge.max_chunk_chars))
                found = documents.get(source, [])
                verdict.expected_chunks += expected
                verdict.duplicate_documents += max(0, len(found) - 1)
                stored = sum(per_doc.get(doc, 0) for doc in found)
                verdict.chunks += stored
                verdict.duplicate_chunks += max(0, stored - expected) + sum(
                    per_doc.get(doc, 0) - distinct.get(doc, 0) for doc in found)
                verdict.missing_chunks += max(0, expected - stored)
        jobs = [await self.job(job_id) for job_id in self.sent]
        verdict.statuses = sorted({job.status for job in jobs})
        verdict.attempts = sorted(job.attempts for job in jobs)
        verdict.latencies_s = sorted((job.updated_at - job.created_at).total_seconds() for job in jobs)
        return verdict


@dataclass
class Verdict:
    expected_chunks: int = 0
    chunks: int = 0
    duplicate_chunks: int = 0
    missing_chunks: int = 0
    duplicate_documents: int = 0
    statuses: list[str] = field(default_factory=list)
    attempts: list[int] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lat = self.latencies_s
        return {"chunks": self.chunks, "expected": self.expected_chunks, "duplicate_chunks": self.duplicate_chunks,
                "missing_chunks": self.missing_chunks, "duplicate_documents": self.duplicate_documents,
                "statuses": self.statuses, "attempts": self.attempts,
                "latency_p50_s": round(statistics.median(lat), 2) if lat else None,
                "latency_max_s": round(max(lat), 2) if lat else None}


async def crash_scenario(profile: Profile, *, files: int = 120, paragraphs: int = 4, kill_at: float = 0.3,
                         timeout_s: float = 90.0) -> dict[str, Any]:
    """One big ingestion; ``kill -9`` its worker once it has done ``kill_at`` of it; a second worker finishes it."""
    async with Harness(profile) as harness:
        first = start_worker(profile, "crash-first")
        second: subprocess.Popen[bytes] | None = None
        try:
            await wait_ready(profile, "crash-first")
            job_id = await harness.enqueue(corpus(0, files, paragraphs))
            await harness.wait_for([job_id], lambda job: job.status == "running" and job.progress >= kill_at,
                                   timeout_s=timeout_s)
            first.send_signal(signal.SIGKILL)
            first.wait()
            killed_at = time.monotonic()
            at_kill = await harness.job(job_id)
            second = start_worker(profile, "crash-second")
            done = (await harness.wait_for([job_id], lambda job: job.status in ("succeeded", "failed", "cancelled"),
                                           timeout_s=timeout_s))[0]
            recovered_s = time.monotonic() - killed_at
        finally:
            if first.poll() is None:
                first.kill()
            if second is not None:
                stop_worker(second)
        verdict = await harness.verdict()
    return {"profile": profile.name, "scenario": "kill -9 mid-job", "progress_at_kill": round(at_kill.progress, 2),
            "status_at_kill": at_kill.status, "final_status": done.status, "attempts": done.attempts,
            "recovered_in_s": round(recovered_s, 1), **verdict.summary()}


async def two_workers_scenario(profile: Profile, *, jobs: int = 12, files: int = 3, paragraphs: int = 3,
                               timeout_s: float = 120.0) -> dict[str, Any]:
    """Two workers on one queue, ``jobs`` jobs queued while both run: each job runs once, all done."""
    async with Harness(profile) as harness:
        workers = [start_worker(profile, "pair-a"), start_worker(profile, "pair-b")]
        try:
            for name in ("pair-a", "pair-b"):
                await wait_ready(profile, name)
            ids = [await harness.enqueue(corpus(number + 1, files, paragraphs)) for number in range(jobs)]
            await harness.wait_for(ids, lambda job: job.status in ("succeeded", "failed", "cancelled"),
                                   timeout_s=timeout_s)
        finally:
            codes = [stop_worker(worker) for worker in workers]
        verdict = await harness.verdict()
        ran_by = await ran_per_worker(profile)
    return {"profile": profile.name, "scenario": "two workers", "jobs": jobs, "exit_codes": codes,
            "jobs_per_worker": ran_by, **verdict.summary()}


async def ran_per_worker(profile: Profile) -> list[int]:
    """How many jobs each pair worker finished, from its log (``ran job``)."""
    counts = []
    for name in ("pair-a", "pair-b"):
        path = profile.data_dir / f"{name}.log"
        counts.append(path.read_text(errors="replace").count("job finished") if path.exists() else 0)
    return counts
