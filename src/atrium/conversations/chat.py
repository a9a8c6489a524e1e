"""The chat use case: a multi-turn, grounded, streamed answer that is stored no matter what the client does.

Order of work: the user message is committed before anything else happens; an assistant message row is
committed as ``pending``; the answer is produced by a detached run that fills that row when it ends (also
on error, disconnect, or shutdown, where it keeps the partial text with status ``error``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial

from atrium.accounts.ownership import principal_session
from atrium.accounts.principal import Principal
from atrium.conversations import repository as repo
from atrium.conversations.generation import Outcome, answer_and_store
from atrium.conversations.runs import AnswerRun, RunSupervisor
from atrium.gateway.ports import CallContext, ChatModel
from atrium.gateway.settings import ChatSettings
from atrium.guard.pipeline import GuardPipeline
from atrium.knowledge.answering import GroundedAnswerer, GroundedPrompt
from atrium.knowledge.directory import CollectionDirectory
from atrium.store.engine import Database
from atrium.store.models import Message

ENDPOINT = "/api/v1/chat/ask"


class ChatService:
    def __init__(self, db: Database, answerer: GroundedAnswerer, model: ChatModel, runs: RunSupervisor,
                 settings: ChatSettings, directory: CollectionDirectory, guard: GuardPipeline | None = None) -> None:
        self.db = db
        self.directory = directory
        self.answerer = answerer
        self.model = model
        self.runs = runs
        self.settings = settings
        self.guard = guard  # applied once per answer: admit, then input and context, then output

    async def ask(self, principal: Principal, message: str, *, conversation_id: str | None,
                  collections: Sequence[str] | None, endpoint: str = ENDPOINT) -> AnswerRun:
        """Store the question, start the answer run, and return its event feed at once. ``endpoint`` is
        the entry point the model calls are metered under (``/api/v1/chat/ask``, ``/ws``). Only the
        caller's own conversation can be continued, and only collections it may read are searched
        (``NotFound`` otherwise, before anything is stored)."""
        collections = await self.directory.searchable(principal, collections)
        async with principal_session(self.db, principal) as session:
            if conversation_id is None:
                conversation = repo.new_conversation(principal, message[:80])
                session.add(conversation)
                await session.flush()
            else:
                conversation = await repo.get_conversation(session, principal, conversation_id)
                conversation.updated_at = datetime.now(UTC)
            user_message = Message(org_id=principal.org_id, conversation_id=conversation.id, role="user",
                                   content=message)
            session.add(user_message)
            await session.flush()
            assistant = Message(org_id=principal.org_id, conversation_id=conversation.id, role="assistant",
                                content="", status="pending")
            session.add(assistant)
            await session.flush()
            ids = (conversation.id, user_message.id, assistant.id)
        run = AnswerRun()
        run.emit("meta", conversation_id=ids[0], user_message_id=ids[1], message_id=ids[2])
        self.runs.spawn(self._answer(principal, run, message, *ids, collections, endpoint))
        return run

    async def _answer(self, principal: Principal, run: AnswerRun, question: str, conversation_id: str,
                      user_message_id: str, message_id: str, collections: Sequence[str] | None,
                      endpoint: str = ENDPOINT) -> None:
        admitted = await self.guard.admit(principal.org_id) if self.guard is not None else None
        sanitizer = admitted.output() if admitted is not None else None

        async def prompt() -> GroundedPrompt:
            async with self.db.tenant_session(principal.org_id) as session:
                history = await repo.history(session, principal.org_id, conversation_id, user_message_id)
            return await self.answerer.prepare(principal.org_id, question, history, collections, admitted)

        outcome = await answer_and_store(prompt_for=prompt, model=self.model, run=run, settings=self.settings,
                                         context=_context(principal, endpoint), sanitizer=sanitizer,
                                         store=partial(self._store, principal, message_id))
        run.emit("sources", sources=outcome.source_dicts())
        if outcome.error:
            run.emit("error", **outcome.error, message_id=message_id, conversation_id=conversation_id)
        else:
            run.emit("done", message_id=message_id, conversation_id=conversation_id, model=outcome.model,
                     usage=outcome.usage, answer=outcome.text)

    async def _store(self, principal: Principal, message_id: str, outcome: Outcome) -> None:
        async with self.db.tenant_session(principal.org_id) as session:
            await repo.finish_message(session, principal.org_id, message_id, content=outcome.text,
                                      status=outcome.status, model=outcome.model,
                                      sources=outcome.source_dicts(), usage=outcome.usage, error=outcome.error)


def _context(principal: Principal, endpoint: str = ENDPOINT) -> CallContext:
    return CallContext(org_id=principal.org_id, user_id=principal.user_id, api_key_id=principal.api_key_id,
                       endpoint=endpoint, task="qa")
