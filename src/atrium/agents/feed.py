"""A run's events as every listener sees them: numbered, kept in a bounded buffer, readable from any point.

The run publishes into its ``RunFeed``; the stream of ``POST .../runs/stream`` and every join
(``GET .../runs/{run_id}/stream``, with ``Last-Event-ID`` to resume) read it. A listener never slows the
run down: publishing appends to the buffer and wakes whoever waits. The buffer keeps the last
``max_events`` events (a listener that falls further behind skips ahead); the feed is dropped a while
after the run ends (``AgentRuns``).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass
from typing import Any

# Events every listener gets, whatever stream modes it asked for.
ALWAYS = frozenset({"metadata", "error", "end"})


@dataclass(frozen=True, slots=True)
class FeedEvent:
    id: int
    event: str
    data: Any

    def mode(self) -> str:
        """The stream mode the event belongs to (``messages/partial`` -> ``messages``)."""
        name = self.event.split("|", 1)[0]
        if name.startswith("messages"):
            return "messages-tuple" if name == "messages" else "messages"
        return name


class RunFeed:
    """One run's numbered events. ``close`` after the last one (``end``); ``finished`` is set then."""

    def __init__(self, run_id: str, *, max_events: int = 20_000) -> None:
        self.run_id = run_id
        self.finished = asyncio.Event()
        self._events: deque[FeedEvent] = deque(maxlen=max_events)
        self._next_id = 0
        self._wake = asyncio.Event()

    def publish(self, event: str, data: Any) -> None:
        self._events.append(FeedEvent(self._next_id, event, data))
        self._next_id += 1
        wake, self._wake = self._wake, asyncio.Event()
        wake.set()

    def close(self) -> None:
        self.finished.set()
        self._wake.set()

    async def listen(self, *, after: int = -1, modes: Collection[str] | None = None) -> AsyncIterator[FeedEvent]:
        """Every event with an id above ``after`` (the first kept one when the buffer moved on), then each
        new one as it comes, until the run ends. ``modes``: only those stream modes (and ``ALWAYS``)."""
        position = after + 1
        while True:
            wake = self._wake
            first = self._events[0].id if self._events else self._next_id
            batch = list(itertools.islice(self._events, max(position, first) - first, None))
            for item in batch:
                position = item.id + 1
                if modes is None or item.event in ALWAYS or item.mode() in modes:
                    yield item
            if self.finished.is_set() and position >= self._next_id:
                return
            await wake.wait()
