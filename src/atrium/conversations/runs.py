"""Answer runs that outlive their HTTP request.

A run produces events into its own queue and stores its result itself; the client only reads the queue.
So a client that disconnects loses nothing: the run finishes and the answer is stored. The app drains
unfinished runs on shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(slots=True)
class RunEvent:
    event: str  # meta | token | sources | done | error
    data: dict[str, Any]


@dataclass(slots=True)
class AnswerRun:
    """A detached producer's event feed. ``events()`` ends after the ``done`` or ``error`` event."""

    queue: asyncio.Queue[RunEvent] = field(default_factory=asyncio.Queue)
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def emit(self, event: str, **data: Any) -> None:
        self.queue.put_nowait(RunEvent(event, data))

    async def events(self) -> AsyncIterator[RunEvent]:
        while True:
            item = await self.queue.get()
            yield item
            if item.event in ("done", "error"):
                return


class RunSupervisor:
    """Owns detached tasks so they are neither garbage-collected mid-flight nor lost at shutdown."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def drain(self, timeout: float) -> None:
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
            log.warning("%d answer runs were cancelled at shutdown", len(pending))
