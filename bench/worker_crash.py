"""Job workers under crashes and contention, both profiles: duplicates, missing chunks, job latency.

Scenarios (``tests/worker_harness.py``, the same code the tests in ``tests/integration/test_job_workers.py`` run):

* ``kill -9``: one ingestion job of ``--files`` markdown files (each a few chunks) is queued through the service;
  an ``atrium worker`` process starts it; once its progress passes 30% (`--kill-at`) the process gets SIGKILL; a second
  worker process is started and must finish the job (after the dead one's lease expires: ``jobs.lease_s`` = 3 s,
  heartbeat 0.5 s here). Reported: progress at the kill, attempts, seconds from the kill to the job's end
  (second worker's start-up included), chunks stored against the chunker's own count per file, duplicates.
* two workers: two ``atrium worker`` processes on one queue, ``--jobs`` jobs queued once both are ready.
  Reported: attempts per job (1 = claimed once), jobs each worker finished (from its log), duplicates,
  missing chunks, job latency (queued to done) p50 / max.

Profiles: ``embedded`` (SQLite in a temp data dir, the in-process worker's leases) and ``procrastinate``
(PostgreSQL 16 from pgserver, a plain application role under RLS, procrastinate dispatching). Prints one JSON
object per run and a markdown table.

Usage::

    python bench/worker_crash.py                      # both profiles, both scenarios (about 1.5 minutes)
    python bench/worker_crash.py --profiles embedded --files 200 --jobs 20
    python bench/worker_crash.py --profiles procrastinate --concurrency 3 --jobs 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from tests.postgres_fixtures import PostgresServer
from tests.tenancy_helpers import database_with_app_role
from tests.worker_harness import JOB_ENV, Profile, crash_scenario, two_workers_scenario


async def run(profiles: list[str], files: int, jobs: int, kill_at: float, base: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    server = None
    try:
        for name in profiles:
            for scenario in ("crash", "pair"):
                data_dir = base / f"{name}-{scenario}"
                if name == "embedded":
                    profile = Profile("embedded", data_dir)
                else:
                    if server is None:
                        import pgserver

                        raw = pgserver.get_server(str(base / "pg"), cleanup_mode="stop")
                        server = PostgresServer(raw, parse_qs(urlparse(raw.get_uri()).query)["host"][0])
                    urls = await database_with_app_role(server)
                    profile = Profile("procrastinate", data_dir, urls.app_url, urls.owner_url)
                row = (await crash_scenario(profile, files=files, kill_at=kill_at) if scenario == "crash"
                       else await two_workers_scenario(profile, jobs=jobs))
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        if server is not None:
            server.server.cleanup()  # type: ignore[attr-defined]
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| profile | scenario | jobs | attempts | chunks (expected) | duplicate chunks | missing chunks "
             "| duplicate docs | latency p50 / max (s) | notes |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        notes = (f"killed at {row['progress_at_kill']:.0%}, done {row['recovered_in_s']} s after the kill"
                 if row["scenario"].startswith("kill") else f"jobs per worker {row['jobs_per_worker']}")
        lines.append(f"| {row['profile']} | {row['scenario']} | {len(row['attempts'])} | "
                     f"{sorted(set(row['attempts']))} | {row['chunks']} ({row['expected']}) | "
                     f"{row['duplicate_chunks']} | {row['missing_chunks']} | {row['duplicate_documents']} | "
                     f"{row['latency_p50_s']} / {row['latency_max_s']} | {notes} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", nargs="+", default=["embedded", "procrastinate"],
                        choices=["embedded", "procrastinate"])
    parser.add_argument("--files", type=int, default=120, help="files in the job that is killed")
    parser.add_argument("--jobs", type=int, default=12, help="jobs for the two workers")
    parser.add_argument("--concurrency", type=int, default=1, help="jobs.concurrency of each worker (procrastinate)")
    parser.add_argument("--kill-at", type=float, default=0.3, help="job progress at which the worker is killed")
    args = parser.parse_args()
    JOB_ENV["ATRIUM_JOBS__CONCURRENCY"] = str(args.concurrency)
    with tempfile.TemporaryDirectory(prefix="atrium-worker-crash-") as base:
        rows = asyncio.run(run(args.profiles, args.files, args.jobs, args.kill_at, Path(base)))
    print(table(rows))


if __name__ == "__main__":
    main()
