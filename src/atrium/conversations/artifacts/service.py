"""The artifacts use cases: create one (from the caller's content, or written by the model), list, read,
read its versions, edit (a new version), change who sees it, delete, export, search. Each works in one
transaction on behalf of the principal (the rules are in ``repository``) and returns rows or records;
the search index follows after the commit (``index``)."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from atrium.accounts.ownership import principal_session
from atrium.accounts.principal import Principal
from atrium.conversations import repository as conversations_repo
from atrium.conversations.artifacts import repository as repo
from atrium.conversations.artifacts.content import (
    EXPORT_TYPES,
    Draft,
    body_text,
    check_kind,
    draft,
    searchable_text,
)
from atrium.conversations.artifacts.generation import ArtifactWriter, prompt_messages
from atrium.conversations.artifacts.index import ArtifactIndex
from atrium.errors import Forbidden, InvalidRequest
from atrium.gateway.ports import CallContext, ChatModel
from atrium.guard.pipeline import GuardPipeline
from atrium.guard.sanitize import MarkdownSanitizer
from atrium.knowledge.answering import relevant
from atrium.knowledge.service import KnowledgeService, SearchHit, SearchMode, check_collection
from atrium.realtime.ports import EventPublisher, publish_quietly
from atrium.realtime.publish import artifact_event
from atrium.store.models import Artifact, ArtifactVersion

log = logging.getLogger(__name__)

ENDPOINT = "/api/v1/artifacts/generate"
DEFAULT_VISIBILITY = "private"
GENERATION_MAX_TOKENS = 2048
MAX_SEARCH_DEPTH = 400  # chunks looked at, at most, to find ``limit`` artifacts the caller may read
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class ArtifactRecord:
    """An artifact with one of its versions (the current one unless said otherwise)."""

    artifact: Artifact
    version: ArtifactVersion


@dataclass(frozen=True, slots=True)
class ArtifactHit:
    artifact: Artifact
    score: float
    snippet: str


@dataclass(frozen=True, slots=True)
class Export:
    filename: str
    media_type: str
    body: str


class ArtifactService:
    """The artifacts use cases over the database, the search index (``ArtifactIndex``, in the knowledge
    layer) and the model (the gateway's stack; the guard pipeline applied once per generation, as for a
    grounded answer: admit, the prompt's input stage, the sources' context stage, the output sanitiser)."""

    def __init__(self, knowledge: KnowledgeService, model: ChatModel, guard: GuardPipeline | None = None, *,
                 top_k: int = 5, min_relevance: float = 0.0, temperature: float = 0.2,
                 max_tokens: int = GENERATION_MAX_TOKENS, events: EventPublisher | None = None) -> None:
        self.db = knowledge.db
        self.events = events  # realtime ``artifact`` events, to those who may read the artifact
        self.knowledge = knowledge
        self.index = ArtifactIndex(knowledge)
        self.writer = ArtifactWriter(model, max_tokens=max_tokens, temperature=temperature)
        self.guard = guard
        self.top_k = top_k
        self.min_relevance = min_relevance

    # -- writing -------------------------------------------------------------------------------------------

    async def create(self, principal: Principal, *, kind: str, title: str, description: str, content: Any,
                     visibility: str | None = None, conversation_id: str | None = None,
                     agent_thread_id: str | None = None) -> ArtifactRecord:
        """A new artifact of the caller's, version 1 holding ``content`` (checked against ``kind``);
        ``agent_thread_id``: the agent thread whose run made it (erased with the thread)."""
        checked = draft(check_kind(kind), title, description, content)
        return await self._store_new(principal, kind, checked, visibility or DEFAULT_VISIBILITY, conversation_id,
                                     agent_thread_id)

    async def generate(self, principal: Principal, prompt: str, *, kind: str | None = None,
                       conversation_id: str | None = None, collection: str | None = None,
                       visibility: str | None = None) -> ArtifactRecord:
        """A new artifact written by the model for ``prompt`` (of ``kind``, or the one the model picks),
        grounded on ``collection``'s passages when one is named (``NotFound`` unless the caller may read it)."""
        visibility = visibility or DEFAULT_VISIBILITY
        if kind is not None:
            check_kind(kind)
        if not principal.has_role("member"):  # refused before the model is paid for
            raise Forbidden("This needs the member role.")
        repo.check_visibility(principal, visibility, division_id=principal.division_id)
        collections = (await self.knowledge.directory.searchable(principal, [check_collection(collection)])
                       if collection is not None else None)
        if conversation_id is not None:
            async with principal_session(self.db, principal) as session:
                await conversations_repo.get_conversation(session, principal, conversation_id)
        admitted = await self.guard.admit(principal.org_id) if self.guard is not None else None
        if admitted is not None:
            prompt = await admitted.question(prompt)
        passages: list[str] = []
        if collections:
            hits = await self.knowledge.search(principal.org_id, prompt, mode="hybrid", limit=self.top_k,
                                               collections=collections)
            texts = [hit.chunk.text for hit in relevant(hits, self.min_relevance)]
            passages = ([passage.prompt for passage in admitted.context(texts) if passage.prompt.strip()]
                        if admitted is not None else texts)
        context = CallContext(org_id=principal.org_id, user_id=principal.user_id, api_key_id=principal.api_key_id,
                              endpoint=ENDPOINT, task="artifact")
        generated = await self.writer.write(prompt_messages(prompt, kind, passages), kind, context=context,
                                            guarded=admitted.checked if admitted is not None else frozenset())
        checked = generated.draft
        if generated.kind == "markdown":  # the output stage: the answer sanitiser, as for any answer
            sanitizer = admitted.output() if admitted is not None else MarkdownSanitizer()
            text = sanitizer.feed(checked.content["text"]) + sanitizer.finish()
            checked = draft("markdown", checked.title, checked.description, {"text": text})
        return await self._store_new(principal, generated.kind, checked, visibility, conversation_id)

    async def _store_new(self, principal: Principal, kind: str, checked: Draft, visibility: str,
                         conversation_id: str | None, agent_thread_id: str | None = None) -> ArtifactRecord:
        async with principal_session(self.db, principal) as session:
            if conversation_id is not None:  # only into the caller's own conversation
                await conversations_repo.get_conversation(session, principal, conversation_id)
            artifact, version = await repo.create(session, principal, kind, checked, visibility=visibility,
                                                  conversation_id=conversation_id, agent_thread_id=agent_thread_id)
        await self._index(artifact, version)
        await publish_quietly(self.events, artifact_event("created", artifact, version=version.number,
                                                          title=version.title))
        return ArtifactRecord(artifact, version)

    async def edit(self, principal: Principal, artifact_id: str, *, title: str | None = None,
                   description: str | None = None, content: Any = None,
                   visibility: str | None = None) -> ArtifactRecord:
        """A new version with what is sent in place of the current one's (the same as the current: no new
        version), and/or another visibility (no new version: it is not content)."""
        if title is None and description is None and content is None and visibility is None:
            raise InvalidRequest("Send at least one of title, description, content and visibility.")
        async with principal_session(self.db, principal) as session:
            artifact = await repo.get_changeable(session, principal, artifact_id)
            version = current = await repo.get_version(session, artifact, artifact.current_version)
            proposed = draft(artifact.kind, current.title if title is None else title,
                             current.description if description is None else description,
                             current.content if content is None else content)
            if proposed != Draft(current.title, current.description, current.content):
                version = await repo.add_version(session, principal, artifact, proposed)
            if visibility is not None:
                repo.change_visibility(artifact, principal, visibility)
        if version is not current:
            await self._index(artifact, version)
        if version is not current or visibility is not None:
            await publish_quietly(self.events, artifact_event("updated", artifact, version=version.number,
                                                              title=version.title))
        return ArtifactRecord(artifact, version)

    async def delete(self, principal: Principal, artifact_id: str) -> None:
        """Delete the artifact, every version, and its text and vectors in the search index."""
        async with principal_session(self.db, principal) as session:
            artifact = await repo.get_changeable(session, principal, artifact_id)
            await repo.delete(session, artifact)
            deleted = artifact_event("deleted", artifact)  # to those who could read it
        await self.index.remove(principal.org_id, artifact_id)
        await publish_quietly(self.events, deleted)

    async def erase_made_by(self, org_id: str, *, conversation_id: str | None = None,
                            agent_thread_id: str | None = None) -> int:
        """Erase what a conversation or an agent thread produced (the caller is erasing it): its artifacts,
        every version, and their text and vectors in the search index; how many artifacts."""
        async with self.db.tenant_session(org_id) as session:
            ids = await repo.delete_made_by(session, org_id, conversation_id=conversation_id,
                                            agent_thread_id=agent_thread_id)
        for artifact_id in ids:
            await self.index.remove(org_id, artifact_id)
        return len(ids)

    async def _index(self, artifact: Artifact, version: ArtifactVersion) -> None:
        """Index the current version. The artifact is stored whatever happens here: a failure is logged and
        the next edit indexes it again."""
        text = searchable_text(artifact.kind, version.title, version.description, version.content)
        try:
            await self.index.put(artifact, text)
        except Exception:
            log.exception("artifact %s (version %d) could not be indexed for search", artifact.id, version.number)

    # -- reading -------------------------------------------------------------------------------------------

    async def list_artifacts(self, principal: Principal, *, kind: str | None, limit: int,
                             offset: int) -> list[Artifact]:
        if kind is not None:
            check_kind(kind)
        async with principal_session(self.db, principal) as session:
            return await repo.list_readable(session, principal, kind=kind, limit=limit, offset=offset)

    async def get(self, principal: Principal, artifact_id: str, number: int | None = None) -> ArtifactRecord:
        """The artifact with its version ``number`` (default: the current one)."""
        async with principal_session(self.db, principal) as session:
            artifact = await repo.get_readable(session, principal, artifact_id)
            version = await repo.get_version(session, artifact,
                                             artifact.current_version if number is None else number)
        return ArtifactRecord(artifact, version)

    async def versions(self, principal: Principal, artifact_id: str, *, limit: int,
                       offset: int) -> tuple[Artifact, list[ArtifactVersion]]:
        async with principal_session(self.db, principal) as session:
            artifact = await repo.get_readable(session, principal, artifact_id)
            return artifact, await repo.list_versions(session, artifact, limit=limit, offset=offset)

    async def export(self, principal: Principal, artifact_id: str, number: int | None = None) -> Export:
        """A version (default: the current one) as a file: CSV for a table, the text itself for the others."""
        record = await self.get(principal, artifact_id, number)
        media_type, extension = EXPORT_TYPES[record.artifact.kind]
        stem = _UNSAFE_NAME.sub("-", record.version.title).strip("-._")[:80] or "artifact"
        return Export(f"{stem}.{extension}", media_type, body_text(record.artifact.kind, record.version.content))

    async def search(self, principal: Principal, query: str, *, kind: str | None = None,
                     mode: SearchMode = "hybrid", limit: int = 10) -> list[ArtifactHit]:
        """The artifacts best matching ``query`` among those the caller may read (of ``kind``), best first.

        The index ranks every artifact of the organisation; the ones the caller may not read are dropped,
        and the search looks deeper (up to ``MAX_SEARCH_DEPTH`` chunks) until ``limit`` remain."""
        if kind is not None:
            check_kind(kind)
        depth = min(max(limit * 4, 20), MAX_SEARCH_DEPTH)
        while True:
            hits = await self.index.search(principal.org_id, query, mode=mode, limit=depth)
            best: dict[str, SearchHit] = {}
            for hit in hits:
                best.setdefault(hit.chunk.source, hit)
            async with principal_session(self.db, principal) as session:
                readable = await repo.readable_among(session, principal, list(best), kind=kind)
            found = [ArtifactHit(readable[artifact_id], hit.score, hit.chunk.text[:300])
                     for artifact_id, hit in best.items() if artifact_id in readable]
            if len(found) >= limit or len(hits) < depth or depth >= MAX_SEARCH_DEPTH:
                return found[:limit]
            depth = min(depth * 2, MAX_SEARCH_DEPTH)
