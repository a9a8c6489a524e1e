"""One-shot query records: a question and its grounded answer stored under an id (``/api/v1/query``)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial

from sqlalchemy import select

from atrium.accounts.ownership import owned_by, owner_columns, principal_session
from atrium.accounts.principal import Principal
from atrium.conversations.generation import Outcome
from atrium.conversations.grounded import GroundedUseCase
from atrium.conversations.runs import AnswerRun
from atrium.errors import NotFound
from atrium.store.models import QueryRecord

ENDPOINT = "/api/v1/query"


class QueryService(GroundedUseCase):
    async def submit(self, principal: Principal, question: str, collections: Sequence[str] | None, *,
                     model: str = "") -> tuple[str, asyncio.Task[None]]:
        """Store the query as ``pending`` and start answering it (with ``model``, a catalogue model or route
        the caller checked; "" = the default); returns the record id and the run. The run stores the
        answer itself, so a caller that stops waiting loses nothing."""
        requested = collections
        collections = await self.directory.searchable(principal, collections)
        async with principal_session(self.db, principal) as session:
            record = QueryRecord(org_id=principal.org_id, division_id=principal.division_id, question=question,
                                 collection=",".join(requested) if requested else None, **owner_columns(principal))
            session.add(record)
            await session.flush()
            record_id = record.id
        task = self.runs.spawn(self._answer(principal, record_id, question, collections, AnswerRun(), model))
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
                      collections: Sequence[str] | None, run: AnswerRun, model: str) -> None:
        await self._produce(principal, run, question, collections, endpoint=ENDPOINT,
                            store=partial(self._store, principal, record_id), model=model)

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
