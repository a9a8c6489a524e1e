"""Running a job queue's worker in a test until every job is done."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from atrium.jobs.queue import DatabaseJobQueue
from atrium.store.models import Job


async def work_until_idle(queue: DatabaseJobQueue, *, timeout_s: float = 10.0) -> None:
    """Run ``queue.work()`` until no job is queued or running, then stop it (as shutdown does)."""
    worker = asyncio.create_task(queue.work())
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                async with queue.db.system_session() as session:
                    pending = await session.scalar(select(func.count()).select_from(Job)
                                                   .where(Job.status.in_(("queued", "running"))))
                if not pending:
                    break
                await asyncio.sleep(0.01)
    finally:
        await queue.stop(grace_s=timeout_s)
        await worker
