"""Whether the database answers: the first of the readiness checks (``GET /ready``)."""

from __future__ import annotations

from sqlalchemy import text

from atrium.store.engine import Database


async def database_answers(db: Database) -> bool:
    """True when a trivial query succeeds; any failure (unreachable, refused, timed out) is False."""
    try:
        async with db.system_session() as session:
            await session.execute(text("SELECT 1"))
    except Exception:
        return False
    return True
