"""Resumable answer streams: the journal every answer run writes, and the reader that resumes one.

A client that lost ``POST /api/v1/chat/ask``'s stream asks for the rest after the last event id it saw
(``Last-Event-ID``). ``AnswerStreams.resume`` checks the answer is the caller's (``NotFound`` otherwise),
then reads the run's stream in the replay buffer (``StreamLog``), following it to its final event. Every
resumed stream ends with ``done`` or a typed ``error``:

* the stream is in the buffer: the events after the id, then the new ones as the run produces them;
* the buffer no longer has it (expired, or kept by a process that is gone) and the answer was stored:
  ``sources`` and ``done`` (its ``answer`` is the whole text), or the stored ``error``;
* the answer is still ``pending`` but its run's lease lapsed (the producing process died): the message is
  marked failed (``producer_lost``, keeping the text the buffer holds) and the reader gets that error;
* events the buffer no longer holds were asked for (trimmed from a very long stream): ``replay_gap``.

An answer whose run died while nobody was reading is failed the same way by ``keep_reaping`` (every
``streams.lease_s``), so a client that only lists messages later never sees it ``pending`` for ever.
A buffer in this process only (the embedded default) cannot tell another process's live run (``atrium ask``
beside the server) from a dead one: there, an answer without events in this buffer is taken for abandoned
only when it was asked before this process started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from atrium.accounts.ownership import principal_session
from atrium.accounts.principal import Principal
from atrium.conversations import repository as repo
from atrium.conversations.journal import RunJournal
from atrium.conversations.ports import RunEvent, StreamConflict, StreamEntry, StreamLog
from atrium.conversations.settings import StreamSettings
from atrium.store.engine import Database
from atrium.store.models import Message

log = logging.getLogger(__name__)

PRODUCER_LOST = {"code": "producer_lost",
                 "message": "The server producing this answer stopped before the answer ended."}
REPLAY_GAP = {"code": "replay_gap",
              "message": "The events after this id are no longer buffered; read the message once it is complete."}


def stream_name(org_id: str, message_id: str) -> str:
    return f"{org_id}:{message_id}"


class AnswerStreams:
    """The replay buffer's use cases: a journal for each new answer run, and resuming a stream."""

    def __init__(self, db: Database, stream_log: StreamLog, settings: StreamSettings, *, shared: bool) -> None:
        self.db = db
        self.log = stream_log
        self.settings = settings
        self.shared = shared  # every process producing answers writes to this buffer (Redis)
        self.started_at = datetime.now(UTC)

    def journal(self, org_id: str, message_id: str) -> RunJournal:
        return RunJournal(self.log, stream_name(org_id, message_id), lease_s=self.settings.lease_s,
                          heartbeat_s=self.settings.heartbeat_s)

    async def resume(self, principal: Principal, conversation_id: str, message_id: str, *,
                     after: int = 0) -> AsyncIterator[RunEvent]:
        """The answer's events after ``after`` (an event id; 0: from the start), to its final event.
        ``NotFound`` (before any event) unless it is an answer in the caller's own conversation."""
        async with principal_session(self.db, principal) as session:
            message = await repo.get_answer(session, principal, conversation_id, message_id)
        return self._follow(principal.org_id, message, after)

    async def _follow(self, org_id: str, message: Message, after: int) -> AsyncIterator[RunEvent]:
        stream, last = stream_name(org_id, message.id), after
        block_s = 0.0  # the first look does not wait: a stream that is over answers at once
        while True:
            entries = await self.log.read(stream, last, block_s=block_s)
            block_s = self.settings.heartbeat_s
            if entries:
                if entries[0].seq > last + 1:
                    yield RunEvent("error", {**REPLAY_GAP, **_ids(message)}, last + 1)
                    return
                for entry in entries:
                    yield RunEvent(entry.event, entry.data, entry.seq)
                    last = entry.seq
                    if entry.final:
                        return
                continue
            if await self.log.alive(stream):
                continue
            row = await self._message(org_id, message.id)
            if row is None:
                yield RunEvent("error", {"code": "not_found", "message": "The conversation was deleted.",
                                         **_ids(message)}, last + 1)
                return
            if row.status == "pending":
                if _age_s(row) < self.settings.lease_s:
                    continue  # its run may not have taken its lease yet
                row = await self._abandon(org_id, row)
                if row is None:
                    continue  # the run ended it meanwhile: its final event is in the stream
            for event in stored_events(row, last):
                yield event
            return

    async def reap(self, *, limit: int = 100) -> int:
        """Fail the ``pending`` answers whose runs are gone (no lease, no final event): how many."""
        cutoff = datetime.now(UTC) - timedelta(seconds=self.settings.lease_s)
        if not self.shared:
            cutoff = min(cutoff, self.started_at)
        async with self.db.system_session() as session:
            rows = list(await session.scalars(select(Message).where(
                Message.status == "pending", Message.role == "assistant", Message.created_at < cutoff)
                .order_by(Message.created_at).limit(limit)))
        failed = 0
        for row in rows:
            if not await self.log.alive(stream_name(row.org_id, row.id)):
                failed += await self._abandon(row.org_id, row) is not None
        return failed

    async def keep_reaping(self) -> None:
        """``reap`` every ``streams.lease_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.settings.lease_s)
            try:
                if failed := await self.reap():
                    log.warning("%d answers were left pending by runs that stopped; marked failed", failed)
            except Exception:
                log.warning("failing abandoned answers failed; trying again later", exc_info=True)

    async def _message(self, org_id: str, message_id: str) -> Message | None:
        async with self.db.tenant_session(org_id) as session:
            return await repo.get_message(session, org_id, message_id)

    async def _abandon(self, org_id: str, row: Message) -> Message | None:
        """Fail the answer of a run that died: the message (with the text the buffer holds) and the
        stream (a final ``error`` event, for every other reader). Answers the message as stored, or None
        when the stream has ended meanwhile."""
        stream = stream_name(org_id, row.id)
        entries = await self.log.read(stream, 0, limit=self.settings.max_events)
        if entries and entries[-1].final:
            return None
        if not entries and not self.shared and _created(row) >= self.started_at:
            return None  # maybe another process's run: this process's buffer cannot know, so keep waiting
        partial = "".join(str(entry.data.get("text", "")) for entry in entries if entry.event == "token")
        async with self.db.tenant_session(org_id) as session:
            marked = await repo.finish_message(session, org_id, row.id, status="error", content=partial,
                                               error=dict(PRODUCER_LOST))
        stored = await self._message(org_id, row.id)
        if not marked or stored is None:
            return None  # its run stored it meanwhile (or it was deleted): follow the stream again
        final = stored_events(stored, entries[-1].seq if entries else 0)[-1]
        with contextlib.suppress(StreamConflict):  # the run's own final event won the race: both are final
            await self.log.append(stream, [StreamEntry(final.seq, final.event, final.data)])
        return stored


def stored_events(row: Message, last: int) -> list[RunEvent]:
    """A finished answer as the final events of its stream, numbered after ``last``."""
    ids = _ids(row)
    if row.status == "complete":
        return [RunEvent("sources", {"sources": row.sources or []}, last + 1),
                RunEvent("done", {**ids, "model": row.model, "usage": row.usage or {}, "answer": row.content},
                         last + 2)]
    error = row.error or {}
    return [RunEvent("error", {"code": str(error.get("code", "internal_error")),
                               "message": str(error.get("message", "The answer failed.")), **ids}, last + 1)]


def _ids(row: Message) -> dict[str, Any]:
    return {"message_id": row.id, "conversation_id": row.conversation_id}


def _created(row: Message) -> datetime:
    return row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)  # SQLite: naive UTC


def _age_s(row: Message) -> float:
    return (datetime.now(UTC) - _created(row)).total_seconds()
