"""One-shot query records: a question and its grounded answer stored under an id (``/api/v1/query``)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial

from sqlalchemy import select

from atrium.accounts.ownership import owned_by, owner_columns, principal_session
from atrium.accounts.principal import Principal
from atrium.conversations.generation import Outcome, answer_and_store
from atrium.conversations.runs import AnswerRun, RunSupervisor
from atrium.errors import NotFound
from atrium.gateway.ports import CallContext, ChatModel
from atrium.gateway.settings import ChatSettings
from atrium.guard.pipeline import GuardPipeline
from atrium.knowledge.answering import GroundedAnswerer, GroundedPrompt
from atrium.knowledge.directory import CollectionDirectory
from atrium.store.engine import Database
from atrium.store.models import QueryRecord

ENDPOINT = "/api/v1/query"


class QueryService:
    def __init__(self, db: Database, answerer: GroundedAnswerer, model: ChatModel, runs: RunSupervisor,
                 settings: ChatSettings, directory: CollectionDirectory, guard: GuardPipeline | None = None) -> None:
        self.db = db
        self.directory = directory
        self.answerer = answerer
        self.model = model
        self.runs = runs
        self.settings = settings
        self.guard = guard  # applied once per answer: admit, then input and context, then output

    async def submit(self, principal: Principal, question: str,
                     collections: Sequence[str] | None) -> tuple[str, asyncio.Task[None]]:
        """Store the query as ``pending`` and start answering it; returns the record id and the run.
        The run stores the answer itself, so a caller that stops waiting loses nothing."""
        requested = collections
        collections = await self.directory.searchable(principal, collections)
        async with principal_session(self.db, principal) as session:
            record = QueryRecord(org_id=principal.org_id, division_id=principal.division_id, question=question,
                                 collection=",".join(requested) if requested else None, **owner_columns(principal))
            session.add(record)
            await session.flush()
            record_id = record.id
        task = self.runs.spawn(self._answer(principal, record_id, question, collections, AnswerRun()))
        return record_id, task

    async def get(self, principal: Principal, record_id: str) -> QueryRecord:
        """The caller's own query record; anyone else's is ``NotFound``."""
        async with principal_session(self.db, principal) as session:
            record = await session.scalar(select(QueryRecord).where(QueryRecord.org_id == principal.org_id,
                                                                    QueryRecord.id == record_id,
                                                                    owned_by(QueryRecord, principal)))
        if record is None:
            raise NotFound("No such query.")
        return record

    async def _answer(self, principal: Principal, record_id: str, question: str,
                      collections: Sequence[str] | None, run: AnswerRun) -> None:
        admitted = await self.guard.admit(principal.org_id) if self.guard is not None else None
        sanitizer = admitted.output() if admitted is not None else None

        async def prompt() -> GroundedPrompt:
            return await self.answerer.prepare(principal.org_id, question, (), collections, admitted)

        await answer_and_store(prompt_for=prompt, model=self.model, run=run, settings=self.settings,
                               context=_context(principal), sanitizer=sanitizer,
                               store=partial(self._store, principal, record_id))

    async def _store(self, principal: Principal, record_id: str, outcome: Outcome) -> None:
        async with self.db.tenant_session(principal.org_id) as session:
            record = await session.scalar(select(QueryRecord).where(QueryRecord.org_id == principal.org_id,
                                                                    QueryRecord.id == record_id))
            if record is not None:
                record.status = outcome.status
                record.answer = outcome.text
                record.sources = outcome.source_dicts()
                record.model = outcome.model
                record.usage = outcome.usage
                record.error = outcome.error
                record.completed_at = datetime.now(UTC)


def _context(principal: Principal) -> CallContext:
    return CallContext(org_id=principal.org_id, user_id=principal.user_id, api_key_id=principal.api_key_id,
                       endpoint=ENDPOINT, task="qa")
