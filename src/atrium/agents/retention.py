"""Retention of checkpoints: a thread keeps its newest N checkpoints per namespace.

LangGraph's savers have ``adelete_thread`` (used for erasure) and, on PostgreSQL, ``aprune`` with
``keep_latest`` only (N = 1); nothing keeps N > 1, so these statements do, modelled on the PostgreSQL
saver's own prune. Checkpoint ids are time-ordered (uuid6), so a namespace's newest N are its N largest
ids and everything older than the oldest of them goes: the checkpoints, the pending writes saved against
them, and (PostgreSQL) the channel blobs that only they used. The oldest kept checkpoint's parent pointer
is cleared, as ``aprune`` does, so no history walk reaches a checkpoint that is gone.

A prune runs at the end of a run, while the thread is still ``busy`` (no other run writes to it then), so
writes made against a newer checkpoint are never touched. Threads using a ``DeltaChannel`` (none of
Atrium's graphs) would need their delta snapshots kept; these statements do not know about them.
"""

from __future__ import annotations

from typing import Any

from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

# --- SQLite (tables ``checkpoints`` and ``writes`` of ``AsyncSqliteSaver``) ------------------------------------

_SQLITE_NAMESPACES = "SELECT DISTINCT checkpoint_ns FROM checkpoints WHERE thread_id = ?"
_SQLITE_OLDEST_KEPT = ("SELECT checkpoint_id FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ? "
                       "ORDER BY checkpoint_id DESC LIMIT 1 OFFSET ?")
_SQLITE_DELETES = (
    "DELETE FROM writes WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id < ?",
    "DELETE FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id < ?",
)
_SQLITE_ORPHAN = ("UPDATE checkpoints SET parent_checkpoint_id = NULL "
                  "WHERE thread_id = ? AND checkpoint_ns = ? AND checkpoint_id = ?")


async def prune_sqlite(saver: AsyncSqliteSaver, thread_id: str, keep: int) -> int:
    """Keep ``thread_id``'s newest ``keep`` checkpoints per namespace; the number of checkpoints erased."""
    erased = 0
    async with saver.lock, saver.conn.cursor() as cur:
        await cur.execute(_SQLITE_NAMESPACES, (thread_id,))
        namespaces = [row[0] for row in await cur.fetchall()]
        for ns in namespaces:
            await cur.execute(_SQLITE_OLDEST_KEPT, (thread_id, ns, keep - 1))
            row = await cur.fetchone()
            if row is None:  # no more than ``keep`` checkpoints
                continue
            oldest = row[0]
            for statement in _SQLITE_DELETES:
                await cur.execute(statement, (thread_id, ns, oldest))
            erased += max(cur.rowcount, 0)
            await cur.execute(_SQLITE_ORPHAN, (thread_id, ns, oldest))
        await saver.conn.commit()
    return erased


# --- PostgreSQL (``checkpoints``, ``checkpoint_writes``, ``checkpoint_blobs`` of ``AsyncPostgresSaver``) -------

_PG_NAMESPACES = "SELECT DISTINCT checkpoint_ns FROM checkpoints WHERE thread_id = %s"
_PG_OLDEST_KEPT = ("SELECT checkpoint_id FROM checkpoints WHERE thread_id = %s AND checkpoint_ns = %s "
                   "ORDER BY checkpoint_id DESC LIMIT 1 OFFSET %s")
_PG_WRITES = "DELETE FROM checkpoint_writes WHERE thread_id = %s AND checkpoint_ns = %s AND checkpoint_id < %s"
_PG_CHECKPOINTS = """
WITH deleted AS (
    DELETE FROM checkpoints WHERE thread_id = %s AND checkpoint_ns = %s AND checkpoint_id < %s
    RETURNING checkpoint -> 'channel_versions' AS versions
)
SELECT versions FROM deleted
"""
_PG_ORPHAN = ("UPDATE checkpoints SET parent_checkpoint_id = NULL "
              "WHERE thread_id = %s AND checkpoint_ns = %s AND checkpoint_id = %s")
_PG_REFERENCED = """
SELECT DISTINCT v.key AS channel, v.value AS version FROM checkpoints c
CROSS JOIN LATERAL jsonb_each_text(c.checkpoint -> 'channel_versions') AS v
WHERE c.thread_id = %s AND c.checkpoint_ns = %s
"""
_PG_BLOBS = ("DELETE FROM checkpoint_blobs "
             "WHERE thread_id = %s AND checkpoint_ns = %s AND channel = %s AND version = ANY(%s)")


async def prune_postgres(cur: Any, thread_id: str, keep: int) -> int:
    """The same on PostgreSQL, through a cursor (``dict_row``) inside one transaction; also the blobs that
    only erased checkpoints used."""
    erased = 0
    await cur.execute(_PG_NAMESPACES, (thread_id,))
    namespaces = [row["checkpoint_ns"] for row in await cur.fetchall()]
    for ns in namespaces:
        await cur.execute(_PG_OLDEST_KEPT, (thread_id, ns, keep - 1))
        row = await cur.fetchone()
        if row is None:
            continue
        oldest = row["checkpoint_id"]
        await cur.execute(_PG_WRITES, (thread_id, ns, oldest))
        await cur.execute(_PG_CHECKPOINTS, (thread_id, ns, oldest))
        deleted = await cur.fetchall()
        erased += len(deleted)
        freed = {(channel, str(version)) for r in deleted for channel, version in (r["versions"] or {}).items()}
        await cur.execute(_PG_ORPHAN, (thread_id, ns, oldest))
        await cur.execute(_PG_REFERENCED, (thread_id, ns))
        kept = {(r["channel"], r["version"]) for r in await cur.fetchall()}
        garbage: dict[str, list[str]] = {}
        for channel, version in freed - kept:
            garbage.setdefault(channel, []).append(version)
        for channel, versions in garbage.items():
            await cur.execute(_PG_BLOBS, (thread_id, ns, channel, versions))
    return erased
