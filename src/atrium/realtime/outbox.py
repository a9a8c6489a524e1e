"""One socket's way out: a bounded queue of encoded events and the one task that writes them.

Nothing that serves several sockets ever awaits one socket's send: the hub ``offer``s a broadcast event
(never waits; a full queue drops it and counts it), while the socket's own traffic (replies, its chat's
tokens) is ``put`` (waits for room, which slows that socket's own work only). After drops, the next event
the writer sends is preceded by ``{"type": "lagged", "dropped": n}``; ``max_dropped`` drops in a row set
``overflowed`` (the connection then closes the socket).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CloseFrame:
    """Queued after the socket's last events: the writer closes the socket with it and stops."""

    code: int
    reason: str


class Outbox:
    """A bounded queue of JSON texts (or one final ``CloseFrame``) written by ``run`` in order."""

    def __init__(self, send: Callable[[str], Awaitable[None]], close: Callable[[int, str], Awaitable[None]], *,
                 size: int, max_dropped: int) -> None:
        self._send = send
        self._close = close
        self._queue: asyncio.Queue[str | CloseFrame] = asyncio.Queue(size)
        self.max_dropped = max_dropped
        self.dropped = 0  # since the last ``lagged`` notice
        self.dropped_total = 0
        self.overflowed = asyncio.Event()

    def offer(self, text: str) -> bool:
        """Queue a broadcast event unless the queue is full (then it is dropped and counted)."""
        try:
            self._queue.put_nowait(text)
        except asyncio.QueueFull:
            self.dropped += 1
            self.dropped_total += 1
            if self.dropped >= self.max_dropped:
                self.overflowed.set()
            return False
        return True

    async def put(self, text: str) -> None:
        """Queue the socket's own event, waiting for room."""
        await self._queue.put(text)

    async def drained(self) -> None:
        """Wait until everything queued so far was written."""
        await self._queue.join()

    async def put_close(self, code: int, reason: str) -> None:
        await self._queue.put(CloseFrame(code, reason))

    async def run(self) -> None:
        """Write until a ``CloseFrame`` (closing the socket) or until the send fails (the client left)."""
        while True:
            item = await self._queue.get()
            try:
                if isinstance(item, CloseFrame):
                    await self._close(item.code, item.reason)
                    return
                if self.dropped:
                    dropped, self.dropped = self.dropped, 0
                    await self._send(json.dumps({"type": "lagged", "id": None, "dropped": dropped}))
                await self._send(item)
            finally:
                self._queue.task_done()
