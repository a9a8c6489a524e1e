"""The artifacts' search index, kept by the knowledge layer.

Each artifact's current version is one document of its organisation's reserved collection
``atrium.artifacts`` (``source``: the artifact's id; ``user_id`` / ``api_key_id``: its owner, so erasing a
user's data erases these too): chunked, embedded and indexed like any document, so the vector index's
reconciliation with the database, keyword search and hybrid ranking all apply unchanged. An edit replaces
the document (``ingest_text`` on the same source); deleting the artifact deletes it, with its vectors.

Why one collection per organisation rather than one per owner or per artifact: visibility can change
without moving vectors, and the vector index keeps one structure per collection, not thousands. The
collection is private to an owner no principal can be (``INDEX_OWNER``) and its name is reserved
(``knowledge.collections.RESERVED_PREFIX``), so no document search, grounded answer or collection listing
reads it; ``search`` runs in the organisation's service scope and its caller keeps only the artifacts the
principal may read (``repository.readable_among``).
"""

from __future__ import annotations

import contextlib
import logging

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from atrium.errors import NotFound
from atrium.knowledge import repository as knowledge_repo
from atrium.knowledge.collections import RESERVED_PREFIX
from atrium.knowledge.service import KnowledgeService, SearchHit, SearchMode
from atrium.store.models import Artifact, Collection, new_id, utcnow

log = logging.getLogger(__name__)

COLLECTION = f"{RESERVED_PREFIX}artifacts"
# The owner of the reserved collection: a key id no credential has (ids are hex), so no principal owns it.
INDEX_OWNER = "atrium-artifacts"


class ArtifactIndex:
    """Puts, removes and searches artifacts' texts in the knowledge layer (see the module docstring)."""

    def __init__(self, knowledge: KnowledgeService) -> None:
        self.knowledge = knowledge
        self._ready: set[str] = set()  # organisations whose reserved collection is known to be right

    async def put(self, artifact: Artifact, text: str) -> None:
        """Index ``text`` as ``artifact``'s (replacing what was indexed for it)."""
        await self._ensure_collection(artifact.org_id)
        await self.knowledge.ingest_text(artifact.org_id, COLLECTION, artifact.id, text, artifact.title,
                                         markdown=True, user_id=artifact.user_id, api_key_id=artifact.api_key_id)

    async def remove(self, org_id: str, artifact_id: str) -> None:
        """Forget ``artifact_id``'s text and vectors."""
        async with self.knowledge.db.tenant_session(org_id) as session:
            document = await knowledge_repo.find_document_by_source(session, org_id, COLLECTION, artifact_id)
        if document is not None:
            with contextlib.suppress(NotFound):  # removed at the same time by another request
                await self.knowledge.delete_document(org_id, document.id)

    async def search(self, org_id: str, query: str, *, mode: SearchMode, limit: int) -> list[SearchHit]:
        """The best ``limit`` chunks for ``query`` among every artifact of the organisation, whoever may read
        them (a chunk's ``source`` is its artifact's id). The caller keeps those the principal may read."""
        return await self.knowledge.search(org_id, query, mode=mode, limit=limit, collections=[COLLECTION])

    async def _ensure_collection(self, org_id: str) -> None:
        """The reserved collection exists and belongs to ``INDEX_OWNER`` (were it ever made otherwise, e.g.
        by ``atrium ingest --collection atrium.artifacts`` before any artifact, it is taken back)."""
        if org_id in self._ready:
            return
        values = {"id": new_id(), "org_id": org_id, "name": COLLECTION, "visibility": "private", "writers": "owner",
                  "division_id": None, "user_id": None, "api_key_id": INDEX_OWNER, "created_at": utcnow()}
        async with self.knowledge.db.tenant_session(org_id) as session:
            dialect = session.get_bind().dialect.name
            insert = pg_insert(Collection) if dialect == "postgresql" else sqlite_insert(Collection)
            await session.execute(insert.values(values).on_conflict_do_nothing(index_elements=["org_id", "name"]))
            row = (await session.execute(select(Collection.visibility, Collection.user_id, Collection.api_key_id)
                                         .where(Collection.org_id == org_id, Collection.name == COLLECTION))).one()
            if tuple(row) != ("private", None, INDEX_OWNER):
                log.warning("the reserved collection %s of organisation %s was not private: taken back",
                            COLLECTION, org_id)
                await session.execute(update(Collection).where(Collection.org_id == org_id,
                                                               Collection.name == COLLECTION)
                                      .values(visibility="private", writers="owner", division_id=None, user_id=None,
                                              api_key_id=INDEX_OWNER))
        self._ready.add(org_id)
        await self.knowledge.announce_change(org_id)
