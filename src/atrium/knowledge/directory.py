"""Which collections a question may look in, answered from memory: each organisation's collections (name,
visibility, division, owner) are read once and kept, so the check on the hot path of ``/api/v1/chat/ask``,
``/api/v1/query`` and search costs no query.

The rules are those of ``atrium.accounts.ownership`` (``may_read_collection``); the rows of the answer's
sources are still read under the principal's scope (RLS on PostgreSQL). What is kept goes stale only when a
collection is narrowed or deleted: whoever commits such a change calls ``forget`` at once in its own process
(``KnowledgeService`` does it when it announces the change) and every other replica on the announcement;
``ttl_s`` bounds a missed announcement. A collection made since the read is found by reading again when a
caller names it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cachetools import TTLCache
from sqlalchemy import select

from atrium.accounts.ownership import may_read_collection, principal_session
from atrium.accounts.principal import Principal
from atrium.knowledge.collections import among, searchable
from atrium.store.engine import Database
from atrium.store.models import Collection

_ORGS = 4096  # organisations kept
_LARGE = 2000  # an organisation with more collections is asked in SQL each time (see ``searchable``)


@dataclass(frozen=True, slots=True)
class CollectionEntry:
    """What decides who may read a collection (the attributes ``may_read_collection`` reads)."""

    name: str
    visibility: str
    division_id: str | None
    user_id: str | None
    api_key_id: str | None


class CollectionDirectory:
    """Each organisation's collections, kept per process for ``ttl_s`` or until ``forget``."""

    def __init__(self, db: Database, ttl_s: float) -> None:
        self._db = db
        self._entries: TTLCache[str, tuple[CollectionEntry, ...] | None] | None = (
            TTLCache(maxsize=_ORGS, ttl=ttl_s) if ttl_s > 0 else None)
        # Bumped by every ``forget``: a read that started before one is not kept (it may predate the change).
        self._epoch = 0

    def forget(self, org_id: str) -> None:
        self._epoch += 1
        if self._entries is not None:
            self._entries.pop(org_id, None)

    def forget_all(self) -> None:
        self._epoch += 1
        if self._entries is not None:
            self._entries.clear()

    async def searchable(self, principal: Principal, requested: Sequence[str] | None) -> list[str]:
        """The collections a search on behalf of ``principal`` may look in: the ``requested`` ones (each must
        be readable, else ``NotFound``), or every readable one."""
        entries = await self._organisation(principal.org_id)
        if entries is not None and requested is not None and not set(requested) <= {e.name for e in entries}:
            entries = await self._organisation(principal.org_id, fresh=True)  # made since the last read?
        if entries is None:  # too many to keep: let the database filter them
            async with principal_session(self._db, principal) as session:
                return await searchable(session, principal, requested)
        return among([entry.name for entry in entries if may_read_collection(entry, principal)], requested)

    async def _organisation(self, org_id: str, *, fresh: bool = False) -> tuple[CollectionEntry, ...] | None:
        """The organisation's collections (None: more than ``_LARGE``)."""
        if self._entries is not None and not fresh and org_id in self._entries:
            return self._entries[org_id]
        epoch = self._epoch
        async with self._db.tenant_session(org_id) as session:
            rows = (await session.execute(
                select(Collection.name, Collection.visibility, Collection.division_id, Collection.user_id,
                       Collection.api_key_id).where(Collection.org_id == org_id).limit(_LARGE + 1))).all()
        entries = None if len(rows) > _LARGE else tuple(CollectionEntry(*row) for row in rows)
        if self._entries is not None and epoch == self._epoch:
            self._entries[org_id] = entries
        return entries
