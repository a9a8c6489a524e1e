"""Usage analytics latency at 1M usage rows, on SQLite and on PostgreSQL (issue 15).

Fills the ``usage`` table of a migrated database (SQLite: a file; PostgreSQL: pgserver, queried as a normal
role under Row-Level Security, as the app runs) with ``--rows`` calls: ``--orgs`` organisations of
``--users`` users each over ``--days`` days up to today, six models, five endpoints, 3% errors; one heavy
user makes 10% of all calls (the worst case of a user's own report). Then times each report as the routes
run it (``UsageAnalytics.report`` / ``stream_groups``: the same queries, without HTTP), ``--repeat`` times
after two warm-up runs, and reports p50/p95 in ms:

* ``user_day_30d``: a typical user's own report by day over 30 days (``GET /api/v1/analytics/user``);
* ``heavy_user_day_30d`` and ``heavy_user_model_90d``: the heavy user's, by day over 30 days and by model
  over the whole range;
* ``org_day_30d``: an organisation admin's report (totals, groups by day, top users and organisations,
  error outcomes) over 30 days (``GET /api/v1/analytics/system``) of the heavy user's organisation;
* ``platform_org_30d`` / ``platform_org_90d``: the platform admin's report grouped by organisation over 30
  and 90 days (every row);
* ``platform_user_csv_30d``: the CSV export of every user's line over 30 days (streamed; all groups read);
* ``write``: what the metering writer pays for the indexes: a batch of 2000 rows in one transaction.

Then, side by side in the same run, the user and organisation reports again with the indexes as they were
before migration 0022 (``ix_usage_org_created`` on ``org_id, created_at`` only, no covering indexes): what
0022's three covering indexes buy.

Usage::

    nice python bench/analytics_latency.py --out analytics.json            # both databases, 1M rows
    nice python bench/analytics_latency.py --backends sqlite --rows 200000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlparse

from sqlalchemy import insert, text

from atrium.accounts.service import Accounts
from atrium.analytics.period import period_of
from atrium.analytics.queries import Subject
from atrium.analytics.service import Reader, UsageAnalytics
from atrium.store.engine import Database, build_engine
from atrium.store.migrate import upgrade
from atrium.store.models import UsageRecord
from atrium.store.tenancy import grant_app_role

MODELS = ("gpt-4o-mini", "gpt-4o", "claude-haiku", "llama-3.1-8b", "qwen2.5-1.5b", "embed-small")
ENDPOINTS = ("/v1/chat/completions", "/api/v1/chat/ask", "/api/v1/query", "/v1/embeddings", "/v1/messages")
NEW_INDEXES = ("ix_usage_org_created", "ix_usage_org_user_created", "ix_usage_created")


def make_rows(rows: int, orgs: list[str], users: dict[str, list[str]], days: int, seed: int = 7) -> Any:
    """Yield ``rows`` usage rows as tuples of the columns in ``COLUMNS``; the first user of the first org makes
    10% of them."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    heavy_org, heavy_user = orgs[0], users[orgs[0]][0]
    for n in range(rows):
        if n % 10 == 0:
            org, user = heavy_org, heavy_user
        else:
            org = orgs[rng.randrange(len(orgs))]
            user = users[org][rng.randrange(len(users[org]))]
        created = now - timedelta(seconds=rng.uniform(0, days * 86400))
        prompt, completion = rng.randint(20, 2000), rng.randint(0, 800)
        outcome = "ok" if rng.random() > 0.03 else rng.choice(("upstream_error", "model_timeout", "rate_limited"))
        yield (org, user, None, "fake", rng.choice(MODELS), rng.choice(ENDPOINTS), prompt, completion,
               (prompt * 0.15 + completion * 0.6) / 1e6, rng.uniform(50, 3000), outcome, False, created)


COLUMNS = ("org_id", "user_id", "api_key_id", "provider", "model", "endpoint", "prompt_tokens",
           "completion_tokens", "cost_usd", "latency_ms", "outcome", "estimated", "created_at")


def ids(orgs: int, users: int) -> tuple[list[str], dict[str, list[str]]]:
    org_ids = [uuid.uuid4().hex for _ in range(orgs)]
    return org_ids, {org: [uuid.uuid4().hex for _ in range(users)] for org in org_ids}


# --- Filling each database -----------------------------------------------------------------------------------

def fill_sqlite(path: Path, args: argparse.Namespace, orgs: list[str], users: dict[str, list[str]]) -> None:
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA synchronous=OFF")
        con.executemany("INSERT INTO organizations (id, name, created_at) VALUES (?, ?, ?)",
                        [(org, f"org {n}", "2026-01-01 00:00:00.000000") for n, org in enumerate(orgs)])
        marks = ", ".join("?" for _ in COLUMNS)
        # The text form SQLAlchemy stores (and compares) SQLite datetimes in.
        batch = ((*row[:-1], row[-1].strftime("%Y-%m-%d %H:%M:%S.%f"))
                 for row in make_rows(args.rows, orgs, users, args.days))
        con.executemany(f"INSERT INTO usage ({', '.join(COLUMNS)}) VALUES ({marks})", batch)
        con.commit()
        con.execute("ANALYZE")
        con.commit()
    finally:
        con.close()


def fill_postgres(socket_dir: str, database: str, args: argparse.Namespace, orgs: list[str],
                  users: dict[str, list[str]]) -> None:
    import psycopg

    with psycopg.connect(dbname=database, user="postgres", host=socket_dir, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO organizations (id, name, created_at) VALUES (%s, %s, now())",
                            [(org, f"org {n}") for n, org in enumerate(orgs)])
            with cur.copy(f"COPY usage ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for row in make_rows(args.rows, orgs, users, args.days):
                    copy.write_row(row)
        conn.execute("VACUUM ANALYZE usage")


# --- Timing ----------------------------------------------------------------------------------------------------

async def timed(run: Callable[[], Awaitable[Any]], repeat: int) -> dict[str, float]:
    for _ in range(2):
        await run()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await run()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"p50_ms": round(statistics.median(times), 1),
            "p95_ms": round(times[min(len(times) - 1, int(len(times) * 0.95))], 1)}


async def measure(db: Database, orgs: list[str], users: dict[str, list[str]], repeat: int,
                  only: tuple[str, ...] | None = None) -> dict[str, dict[str, float]]:
    analytics = UsageAnalytics(db, cast(Accounts, None))  # reports need no accounts (only resets do)
    today = datetime.now(UTC).date()
    last30, last90 = period_of(today - timedelta(days=29), today), period_of(today - timedelta(days=89), today)
    heavy = Reader(Subject(orgs[0], users[orgs[0]][0]))
    typical = Reader(Subject(orgs[1], users[orgs[1]][1]))
    org = Reader(Subject(orgs[0]))
    platform = Reader(Subject(None), platform=True)

    async def csv_all() -> None:
        async for _ in analytics.stream_groups(platform, last30, "user"):
            pass

    runs: dict[str, Callable[[], Awaitable[Any]]] = {
        "user_day_30d": lambda: analytics.report(typical, last30, "day", limit=1000),
        "heavy_user_day_30d": lambda: analytics.report(heavy, last30, "day", limit=1000),
        "heavy_user_model_90d": lambda: analytics.report(heavy, last90, "model", limit=1000),
        "org_day_30d": lambda: analytics.report(org, last30, "day", limit=1000, top=10),
        "platform_org_30d": lambda: analytics.report(platform, last30, "org", limit=1000, top=10),
        "platform_org_90d": lambda: analytics.report(platform, last90, "org", limit=1000, top=10),
        "platform_user_csv_30d": csv_all,
    }
    results = {}
    for name, run in runs.items():
        if only is None or name in only:
            results[name] = await timed(run, repeat)
            print(f"  {name}: {results[name]}", flush=True)
    return results


async def write_cost(db: Database, orgs: list[str], users: dict[str, list[str]]) -> dict[str, float]:
    """What the metering writer pays per batch: 5 batches of 2000 rows, each one tenant's executemany in a
    transaction of its own, as ``UsageRecorder`` writes them."""
    times = []
    for batch in range(5):
        rows = [dict(zip(COLUMNS, row, strict=True))
                for row in make_rows(2000, orgs[:1], users, 1, seed=100 + batch)]
        started = time.perf_counter()
        async with db.tenant_session(orgs[0]) as session:
            await session.execute(insert(UsageRecord), rows)
        times.append((time.perf_counter() - started) * 1000)
    return {"batch_2000_rows_p50_ms": round(statistics.median(times), 1)}


async def bench(db: Database, owner: Database, orgs: list[str], users: dict[str, list[str]],
                repeat: int) -> dict[str, Any]:
    with_indexes = await measure(db, orgs, users, repeat)
    with_indexes["write"] = await write_cost(db, orgs, users)
    print(f"  write: {with_indexes['write']}", flush=True)
    async with owner.system_session() as session:
        for index in NEW_INDEXES:
            await session.execute(text(f"DROP INDEX {index}"))
        await session.execute(text("CREATE INDEX ix_usage_org_created ON usage (org_id, created_at)"))
        await session.execute(text("ANALYZE usage"))
    print("  with the index before migration 0022 only:", flush=True)
    without: dict[str, Any] = await measure(db, orgs, users, max(3, repeat // 2),
                                            only=("user_day_30d", "heavy_user_day_30d", "org_day_30d"))
    without["write"] = await write_cost(db, orgs, users)
    print(f"  write: {without['write']}", flush=True)
    return {"with_indexes": with_indexes, "before_0022": without}


async def run_sqlite(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    path = work / "atrium.db"
    url = f"sqlite+aiosqlite:///{path}"
    await asyncio.to_thread(upgrade, url)
    orgs, users = ids(args.orgs, args.users)
    started = time.perf_counter()
    await asyncio.to_thread(fill_sqlite, path, args, orgs, users)
    print(f"sqlite: {args.rows} rows in {time.perf_counter() - started:.0f} s", flush=True)
    db = Database(build_engine(url))
    try:
        return await bench(db, db, orgs, users, args.repeat)
    finally:
        await db.engine.dispose()


async def run_postgres(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import pgserver

    server = pgserver.get_server(str(work / "pg"), cleanup_mode="stop")
    socket_dir = parse_qs(urlparse(server.get_uri()).query)["host"][0]
    name, role = "analytics_bench", "app_bench"
    server.psql(f"CREATE DATABASE {name};")
    server.psql(f"CREATE ROLE {role} LOGIN PASSWORD 'app-password' NOSUPERUSER NOBYPASSRLS;")
    owner_url = f"postgresql+asyncpg://postgres@/{name}?host={socket_dir}"
    app_url = f"postgresql+asyncpg://{role}:app-password@/{name}?host={socket_dir}"
    owner = Database(build_engine(owner_url))
    db: Database | None = None
    try:
        await asyncio.to_thread(upgrade, owner_url)
        await grant_app_role(owner, role)
        orgs, users = ids(args.orgs, args.users)
        started = time.perf_counter()
        await asyncio.to_thread(fill_postgres, socket_dir, name, args, orgs, users)
        print(f"postgres: {args.rows} rows in {time.perf_counter() - started:.0f} s", flush=True)
        db = Database(build_engine(app_url))
        return await bench(db, owner, orgs, users, args.repeat)
    finally:
        if db is not None:
            await db.engine.dispose()
        await owner.engine.dispose()
        server.cleanup()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--orgs", type=int, default=20)
    parser.add_argument("--users", type=int, default=100, help="users per organisation")
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="atrium-analytics-"))
    results: dict[str, Any] = {"rows": args.rows, "orgs": args.orgs, "users_per_org": args.users, "days": args.days}
    try:
        for backend in args.backends.split(","):
            print(f"{backend}:", flush=True)
            runner = run_sqlite if backend == "sqlite" else run_postgres
            results[backend] = await runner(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text_out = json.dumps(results, indent=2)
    print(text_out)
    if args.out:
        args.out.write_text(text_out + "\n")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
