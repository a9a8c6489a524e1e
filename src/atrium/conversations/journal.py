"""An answer run's journal: its events copied into the replay buffer (the ``StreamLog``), and its lease.

The run emits events synchronously, token by token; the journal queues them and a pump task appends them
in batches (one round trip for whatever accumulated, at most one every ``batch_s``), so the model's stream
never waits on the log and a fast stream costs a few appends a second, not one per token. The
pump also renews the run's lease every ``heartbeat_s``, including while the model is silent, and drops it
after the final event: a stream left without a final event and without a lease was abandoned.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from atrium.conversations.ports import RunEvent, StreamConflict, StreamEntry, StreamLog

log = logging.getLogger(__name__)


class RunJournal:
    """Copies one run's events into ``stream_log`` under ``stream`` and holds the run's lease there."""

    def __init__(self, stream_log: StreamLog, stream: str, *, lease_s: float, heartbeat_s: float,
                 batch_s: float = 0.02) -> None:
        self.log = stream_log
        self.stream = stream
        self.lease_s = lease_s
        self.heartbeat_s = heartbeat_s
        self.batch_s = batch_s
        self._pending: list[StreamEntry] = []
        self._wake = asyncio.Event()
        self._closing = False
        self._ended = False
        self._task: asyncio.Task[None] | None = None
        self._renewed_at = 0.0

    def push(self, item: RunEvent) -> None:
        """Queue an event for the log (called by ``AnswerRun.emit``)."""
        self._pending.append(StreamEntry(item.seq, item.event, item.data))
        self._wake.set()

    async def open(self) -> None:
        """Take the lease and write what is queued (the ``meta`` event) before the caller learns the
        message id, then start the pump. A log that fails here costs the replay, never the answer."""
        try:
            await self._renew()
            await self._flush()
        except Exception:
            log.warning("the replay buffer refused stream %s; retrying in the background", self.stream,
                        exc_info=True)
        self._task = asyncio.create_task(self._pump(), name=f"journal:{self.stream}")

    async def close(self, timeout_s: float = 5.0) -> None:
        """Write what is left (the final event) and stop; waits at most ``timeout_s``."""
        self._closing = True
        self._wake.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except TimeoutError:
            log.warning("the replay buffer did not take the end of stream %s in time", self.stream)
            self._task.cancel()

    async def _pump(self) -> None:
        while not self._ended:
            if not self._pending:
                if self._closing:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.heartbeat_s)
                self._wake.clear()
            try:
                await self._flush()
                if not self._ended and asyncio.get_running_loop().time() - self._renewed_at >= self.heartbeat_s / 2:
                    await self._renew()
            except StreamConflict:
                log.warning("stream %s lacks events of its run; no longer journaling it", self.stream)
                return
            except Exception:
                log.warning("the replay buffer failed for stream %s; retrying", self.stream, exc_info=True)
                await asyncio.sleep(min(self.heartbeat_s, 1.0))
                continue
            if not self._ended and not self._closing:
                await asyncio.sleep(self.batch_s)  # let the next tokens gather into one append

    async def _renew(self) -> None:
        self._renewed_at = asyncio.get_running_loop().time()
        await self.log.renew(self.stream, self.lease_s)

    async def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            await self.log.append(self.stream, batch)
        except StreamConflict as conflict:
            if conflict.ended:  # by this run's final event (an earlier try), or by a reader that found the
                self._ended = True  # lease lapsed and failed the message: either way, nothing more to write
                self._pending = []
                return
            if conflict.last < batch[0].seq - 1:
                raise  # entries of this run are missing from the log: stop journaling
            # An earlier try was applied although its answer was lost: keep only what the log lacks.
            self._pending = [entry for entry in batch if entry.seq > conflict.last] + self._pending
            return
        except Exception:
            self._pending = batch + self._pending  # retried at the next beat
            raise
        if batch[-1].final:
            self._ended = True
            with contextlib.suppress(Exception):
                await self.log.release(self.stream)
