"""The chat use case: a multi-turn, grounded, streamed answer that is stored no matter what the client does.

Order of work: the user message is committed before anything else happens; an assistant message row is
committed as ``pending``; the answer is produced by a detached run that fills that row when it ends (also
on error, disconnect, or shutdown, where it keeps the partial text with status ``error``). With the
replay buffer (``streams``), every event of the run is also journaled, so a client that lost the stream
resumes it (``conversations/replay.py``). With ``assistant`` set (the app sets it), the answer is one turn
of the assistant graph (``agents/chat_turns.py``: retrieval, intent, the answer with citations or an
artifact or a clarifying question, validation); without it, the grounded answer of ``GroundedUseCase``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

from atrium.accounts.ownership import owner_of, principal_session
from atrium.accounts.principal import Principal
from atrium.conversations import changes
from atrium.conversations import repository as repo
from atrium.conversations.generation import Outcome, error_of
from atrium.conversations.grounded import GroundedUseCase
from atrium.conversations.replay import AnswerStreams
from atrium.conversations.runs import AnswerRun
from atrium.gateway.ports import ChatMessage
from atrium.realtime.ports import Audience, Event, EventPublisher, publish_quietly
from atrium.realtime.publish import message_event
from atrium.store.models import Message, new_id

if TYPE_CHECKING:
    from atrium.agents.chat_turns import ChatAssistant

log = logging.getLogger(__name__)

ENDPOINT = "/api/v1/chat/ask"


class ChatService(GroundedUseCase):
    streams: AnswerStreams | None = None  # the replay buffer; None: the events reach the first reader only
    assistant: ChatAssistant | None = None  # the assistant graph that answers; None: the plain grounded answer
    events: EventPublisher | None = None  # realtime ``message`` events to the conversation's owner

    async def ask(self, principal: Principal, message: str, *, conversation_id: str | None,
                  collections: Sequence[str] | None, endpoint: str = ENDPOINT,
                  steps: bool = False, socket_id: str | None = None) -> AnswerRun:
        """Store the question, start the answer run, and return its event feed at once. ``endpoint`` is
        the entry point the model calls are metered under (``/api/v1/chat/ask``, ``/ws``). Only the
        caller's own conversation can be continued, and only collections it may read are searched
        (``NotFound`` otherwise, before anything is stored). ``steps``: the run also emits a ``step``
        event per node of the assistant graph. The ``message`` events go to the owner's sockets but
        ``socket_id``'s, the one asking (it has the answer's own events)."""
        collections = await self.directory.searchable(principal, collections)
        # One round trip for the writes: ids and times are set here, so nothing is flushed before the commit
        # (the answer row is a microsecond younger than the question, which keeps their order).
        now = datetime.now(UTC)
        async with principal_session(self.db, principal) as session:
            if conversation_id is None:
                conversation = repo.new_conversation(principal, message[:80])
                conversation.id, conversation.created_at, conversation.updated_at = new_id(), now, now
                session.add(conversation)
                past: Sequence[ChatMessage] = ()  # a new conversation has no history to read
            else:
                conversation = await repo.get_conversation(session, principal, conversation_id)
                conversation.updated_at = now
                past = await repo.history(session, principal.org_id, conversation.id)
            user_message = Message(id=new_id(), org_id=principal.org_id, conversation_id=conversation.id,
                                   role="user", content=message, created_at=now)
            assistant = Message(id=new_id(), org_id=principal.org_id, conversation_id=conversation.id,
                                role="assistant", content="", status="pending",
                                created_at=now + timedelta(microseconds=1))
            session.add_all((user_message, assistant))
            changes.record(session, conversation, "conversation", conversation.id, "upsert")
            for row in (user_message, assistant):
                changes.record(session, conversation, "message", row.id, "upsert")
            ids = (conversation.id, user_message.id, assistant.id)
            stored = [replace(message_event(principal.org_id, conversation, row), skip=socket_id)
                      for row in (user_message, assistant)]
        for event in stored:
            await publish_quietly(self.events, event)
        run = AnswerRun(journal=self.streams.journal(principal.org_id, ids[2]) if self.streams else None)
        run.emit("meta", conversation_id=ids[0], user_message_id=ids[1], message_id=ids[2])
        if run.journal is not None:
            await run.journal.open()
        self.runs.spawn(self._answer(principal, run, message, *ids, collections, past, endpoint, steps, socket_id))
        return run

    async def _answer(self, principal: Principal, run: AnswerRun, question: str, conversation_id: str,
                      user_message_id: str, message_id: str, collections: Sequence[str],
                      past: Sequence[ChatMessage], endpoint: str = ENDPOINT, steps: bool = False,
                      socket_id: str | None = None) -> None:
        async def history() -> Sequence[ChatMessage]:  # read with the question (the same turns as before it)
            return past

        try:
            store = partial(self._store, principal, message_id, conversation_id=conversation_id, socket_id=socket_id)
            if self.assistant is not None:
                outcome = await self.assistant.answer(principal, run, question, model=self.model, history=history,
                                                      collections=collections, endpoint=endpoint, steps=steps,
                                                      store=store)
            else:
                outcome = await self._produce(principal, run, question, collections, endpoint=endpoint,
                                              history=history, store=store)
            run.emit("sources", sources=outcome.source_dicts())
            if outcome.error:
                run.emit("error", **outcome.error, message_id=message_id, conversation_id=conversation_id)
            else:
                run.emit("done", message_id=message_id, conversation_id=conversation_id, model=outcome.model,
                         usage=outcome.usage, answer=outcome.text,
                         **({"artifacts": outcome.artifacts} if outcome.artifacts else {}))
        except asyncio.CancelledError:  # shutdown: the partial answer was stored as interrupted
            run.emit("error", code="interrupted", message="The server stopped before the answer ended.",
                     message_id=message_id, conversation_id=conversation_id)
            raise
        except Exception as exc:  # before the answer began (the guard's admission...): still ended, and stored
            log.exception("answer run failed before it began")
            failed = Outcome(error=error_of(exc))
            try:
                await self._store(principal, message_id, failed, conversation_id=conversation_id,
                                  socket_id=socket_id)
            finally:
                run.emit("error", **(failed.error or {}), message_id=message_id, conversation_id=conversation_id)
        finally:
            if run.journal is not None:
                await asyncio.shield(run.journal.close())

    async def _store(self, principal: Principal, message_id: str, outcome: Outcome, *,
                     conversation_id: str, socket_id: str | None = None) -> None:
        async with self.db.tenant_session(principal.org_id) as session:
            finished = await repo.finish_message(
                session, principal.org_id, message_id, content=outcome.text, status=outcome.status,
                model=outcome.model, sources=outcome.source_dicts(), usage=outcome.usage, error=outcome.error)
        if finished:  # the conversation is the caller's own (only those can be continued)
            await publish_quietly(self.events, Event(principal.org_id, "message", {
                "conversation_id": conversation_id,
                "message": {"id": message_id, "role": "assistant", "status": outcome.status,
                            "content": outcome.text}}, Audience.owner(owner_of(principal)), skip=socket_id))
