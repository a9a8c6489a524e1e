"""Checkpoint bytes and write time per turn of the assistant graph, over a 100-turn thread, with retention
off and on (issue 13).

Runs in-process over the app's own services (``build_services``: the fake chat model, the hash embedder,
three small documents), the assistant graph compiled as the agents API compiles it and run with the
same run context, on the app's checkpointer: SQLite (``data/checkpoints.db``) and, with ``--postgres``,
PostgreSQL 16 from ``pgserver`` (as its superuser: RLS policies are not evaluated). Per turn it records:

* bytes added: the thread's rows in the checkpoint tables after the turn minus before (SQLite: the
  stored checkpoint, metadata and write values; PostgreSQL: ``pg_column_size`` of whole rows, blobs
  included). Negative with retention on, once pruning frees as much as a turn adds;
* write time: time spent inside the saver's ``aput`` and ``aput_writes`` (a wrapping saver);
* DB bytes: the checkpoint file plus its WAL (SQLite; freed pages are reused, never returned) or the
  three tables' ``pg_total_relation_size`` (PostgreSQL).

    PYTHONPATH=src .venv/bin/python bench/checkpoint_growth.py [--turns 100] [--keep 20] [--postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import functools
import logging
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atrium.accounts.bootstrap import ensure_admin
from atrium.agents.checkpoints import psycopg_url
from atrium.agents.context import AgentContext
from atrium.agents.threads import create_thread
from atrium.container import Services, build_services, close_services, migrate
from atrium.gateway.providers.fake import FakeChatModel
from atrium.settings import Settings

KEY = "atr_bench_admin_key_0123456789abcdefghijklmnop"
DOCS = {
    "refunds.md": "# Refunds\n\nRefunds take up to 14 days. The money goes back to the original card.",
    "invoices.md": "# Invoices\n\nInvoices are emailed on the first day of every month as PDF files.",
    "shipping.md": "# Shipping\n\nParcels ship within two working days from the Lyon warehouse.",
}
QUESTIONS = ["How long do refunds take?", "When are invoices emailed?", "How fast do parcels ship?",
             "Where does the refund money go?"]
SHOWN = (1, 10, 50, 100)


@dataclass
class Turn:
    number: int
    added: int  # bytes the thread's rows grew by (negative: pruning freed more)
    thread_bytes: int
    db_bytes: int
    write_ms: float
    writes: int
    turn_ms: float


@dataclass
class WriteClock:
    seconds: float = 0.0
    calls: int = 0
    samples: list[float] = field(default_factory=list)


def timed(saver: Any, clock: WriteClock) -> Any:
    """A copy of ``saver`` (same connection or pool) whose ``aput``/``aput_writes`` add their time to ``clock``."""
    base = type(saver)

    def wrap(name: str) -> Any:
        inner = getattr(base, name)

        @functools.wraps(inner)
        async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await inner(self, *args, **kwargs)
            finally:
                clock.seconds += time.perf_counter() - started
                clock.calls += 1
        return method

    cls = type(f"Timed{base.__name__}", (base,), {"aput": wrap("aput"), "aput_writes": wrap("aput_writes")})
    twin = copy.copy(saver)
    twin.__class__ = cls
    return twin


class Measure:
    """The thread's row bytes and the checkpoint store's size, on SQLite or PostgreSQL."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.settings = services.settings

    async def thread_bytes(self, thread_id: str) -> int:
        if self.settings.is_sqlite:
            saver = self.services.agents.checkpoints.saver  # type: ignore[attr-defined]
            total = 0
            for query in ("SELECT coalesce(sum(length(checkpoint) + length(metadata)), 0) FROM checkpoints "
                          "WHERE thread_id = ?",
                          "SELECT coalesce(sum(length(value)), 0) FROM writes WHERE thread_id = ?"):
                async with saver.lock, saver.conn.execute(query, (thread_id,)) as cursor:
                    row = await cursor.fetchone()
                total += int(row[0]) if row else 0
            return total
        return await self._pg_scalar("SELECT " + " + ".join(
            f"(SELECT coalesce(sum(pg_column_size(t.*)), 0) FROM {table} t WHERE thread_id = %s)"
            for table in ("checkpoints", "checkpoint_writes", "checkpoint_blobs")), (thread_id,) * 3)

    async def db_bytes(self) -> int:
        if self.settings.is_sqlite:
            path = self.settings.data_dir / "checkpoints.db"
            return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())
        return await self._pg_scalar("SELECT pg_total_relation_size('checkpoints') + "
                                     "pg_total_relation_size('checkpoint_writes') + "
                                     "pg_total_relation_size('checkpoint_blobs')", ())

    async def _pg_scalar(self, query: str, params: tuple[Any, ...]) -> int:
        import psycopg

        url = psycopg_url(self.settings.resolved_migration_database_url)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            row = await (await conn.execute(query, params)).fetchone()
        return int(row[0]) if row else 0


async def run_thread(services: Services, turns: int, keep: int) -> list[Turn]:
    principal = await services.authenticator.authenticate(KEY)
    thread_id = f"bench-{uuid.uuid4().hex[:8]}"
    await create_thread(services.db, principal, thread_id=thread_id, metadata={})
    agents, measure = services.agents, Measure(services)
    assistant = agents.registry.get("assistant")
    results: list[Turn] = []
    before = await measure.thread_bytes(thread_id)
    for number in range(1, turns + 1):
        clock = WriteClock()
        started = time.perf_counter()
        async with agents.checkpoints.for_tenant(principal.org_id) as saver:
            graph = agents.registry.compile(assistant, timed(saver, clock))
            config: Any = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
            context = AgentContext(principal=principal, thread_id=thread_id, run_id=f"run-{number}")
            payload = {"messages": [{"role": "user", "content": QUESTIONS[number % len(QUESTIONS)]}]}
            async for _ in graph.astream(payload, config, stream_mode="values", context=context):
                pass
        if keep:  # what AgentRuns does at the end of each run
            await agents.checkpoints.prune(principal.org_id, thread_id, keep)
        turn_ms = (time.perf_counter() - started) * 1000
        now = await measure.thread_bytes(thread_id)
        results.append(Turn(number, now - before, now, await measure.db_bytes(), clock.seconds * 1000, clock.calls,
                            turn_ms))
        before = now
    return results


@contextlib.asynccontextmanager
async def app_services(data_dir: Path, database_url: str | None) -> AsyncIterator[Services]:
    values: dict[str, Any] = {
        "data_dir": data_dir, "bootstrap_admin_key": KEY, "chat": {"provider": "fake"},
        "embedding": {"provider": "hash"}, "knowledge": {"demo_collection": False, "min_relevance": 0.05},
        # retention is applied by the bench itself, per run, so both settings run on the same services
        "agents": {"checkpoints_keep_last": 0},
    }
    if database_url is not None:
        values["database_url"] = database_url
    settings = Settings(**values)
    await migrate(settings)
    services = await build_services(settings, chat_model=FakeChatModel())
    try:
        await ensure_admin(services.db, preset_key=KEY)  # the bootstrap admin key, as the server makes it
        principal = await services.authenticator.authenticate(KEY)
        for source, text in DOCS.items():
            await services.knowledge.ingest_text(principal.org_id, "docs", source, text,
                                                 title=source.removesuffix(".md").title())
        yield services
    finally:
        await close_services(services)


@contextlib.contextmanager
def postgres(tmp: Path) -> Iterator[Any]:
    """A PostgreSQL 16 server (pgserver); yields a function that makes a fresh database (its asyncpg URL)."""
    import pgserver

    server = pgserver.get_server(str(tmp / "pg"), cleanup_mode="stop")
    socket_dir = server.get_uri().split("host=")[1].split("&")[0]

    def database() -> str:
        name = f"bench_{uuid.uuid4().hex[:8]}"
        server.psql(f"CREATE DATABASE {name};")
        return f"postgresql+asyncpg://postgres@/{name}?host={socket_dir}"

    try:
        yield database
    finally:
        server.cleanup()


def table(backend: str, keep: int, results: list[Turn]) -> str:
    lines = [f"{backend}, retention {'keep_last=' + str(keep) if keep else 'off'}:",
             "| turn | bytes added | thread bytes | DB bytes | write ms (aput+aput_writes) | writes | turn ms |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for turn in results:
        if turn.number in SHOWN or turn.number == len(results):
            lines.append(f"| {turn.number} | {turn.added:,} | {turn.thread_bytes:,} | {turn.db_bytes:,} | "
                         f"{turn.write_ms:.1f} | {turn.writes} | {turn.turn_ms:.0f} |")
    steady = [t for t in results if t.number > len(results) // 2]
    if steady:
        lines.append(f"mean over turns {steady[0].number}-{steady[-1].number}: "
                     f"{sum(t.added for t in steady) / len(steady):,.0f} bytes added, "
                     f"{sum(t.write_ms for t in steady) / len(steady):.1f} ms writing, "
                     f"{sum(t.turn_ms for t in steady) / len(steady):.0f} ms per turn")
    return "\n".join(lines)


async def bench(turns: int, keep: int, with_postgres: bool) -> None:
    """Each backend and setting on its own fresh store, so the DB bytes compare."""
    with tempfile.TemporaryDirectory(prefix="atrium-ckpt-") as tmp, contextlib.ExitStack() as stack:
        backends: list[tuple[str, Any]] = [("SQLite", lambda: None)]
        if with_postgres:
            backends.append(("PostgreSQL", stack.enter_context(postgres(Path(tmp)))))
        for name, database in backends:
            for retention in (0, keep):
                data_dir = Path(tmp) / f"{name.lower()}-{retention}"
                async with app_services(data_dir, await asyncio.to_thread(database)) as services:
                    print(table(name, retention, await run_thread(services, turns, retention)), flush=True)
                    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=100)
    parser.add_argument("--keep", type=int, default=20, help="checkpoints_keep_last when retention is on")
    parser.add_argument("--postgres", action="store_true", help="also on PostgreSQL (pgserver)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(bench(args.turns, args.keep, args.postgres))


if __name__ == "__main__":
    main()
