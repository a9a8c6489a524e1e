"""Answer runs that outlive their HTTP request.

A run produces events into its own queue and stores its result itself; the client only reads the queue.
So a client that disconnects loses nothing: the run finishes and the answer is stored. The app drains
unfinished runs on shutdown. Each event is numbered (``seq``, from 1: the SSE ``id``); a run with a
journal (``conversations/journal.py``) also copies its events into the replay buffer, where a client that
lost the stream reads the rest.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from atrium.conversations.ports import RunEvent

if TYPE_CHECKING:
    from atrium.conversations.journal import RunJournal

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AnswerRun:
    """A detached producer's event feed. ``events()`` ends after the ``done`` or ``error`` event;
    ``journal``, when set, gets a copy of every event for the replay buffer."""

    queue: asyncio.Queue[RunEvent] = field(default_factory=asyncio.Queue)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    journal: RunJournal | None = None
    last_seq: int = 0

    def emit(self, event: str, **data: Any) -> None:
        self.last_seq += 1
        item = RunEvent(event, data, self.last_seq)
        self.queue.put_nowait(item)
        if self.journal is not None:
            self.journal.push(item)

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
