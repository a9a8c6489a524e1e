"""The assistant graph's own ports: where generated artifacts go and where project records are made.

``ArtifactSink``: the graph saves a typed artifact (markdown, code, checklist, table, JSON) on behalf of a
principal and reads one back for the ``read_artifact`` tool. The artifact store proper (versions,
embeddings, sharing) implements it (``artifact_store.StoreArtifactSink``); ``memory.InMemoryArtifactSink``
is the adapter for tests and demos.

``ProjectRecords``: the ``create_project`` tool's and the ``project`` flow's store; ``agents.projects``
holds the real one (the ``projects`` table), ``memory.InMemoryProjectRecords`` the one for tests.

Both decide who may do what from the principal they are given, as repositories do: a caller never gets
more through a tool than it would get through the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from atrium.accounts.principal import Principal

ArtifactKind = Literal["markdown", "code", "checklist", "table", "json"]
ARTIFACT_KINDS: tuple[ArtifactKind, ...] = ("markdown", "code", "checklist", "table", "json")


@dataclass(frozen=True, slots=True)
class ArtifactDraft:
    """A generated artifact before it is stored. ``content`` is its text in the kind's form: Markdown,
    the code itself (``language`` says which), one checklist item per line (``- [ ] item``), CSV with a
    header row, or JSON text."""

    kind: ArtifactKind
    title: str
    description: str
    content: str
    language: str | None = None


@dataclass(frozen=True, slots=True)
class StoredArtifact:
    """An artifact as the store holds it: the draft plus its id and owner."""

    id: str
    org_id: str
    kind: ArtifactKind
    title: str
    description: str
    content: str
    language: str | None = None
    user_id: str | None = None
    api_key_id: str | None = None
    version: int = 1


ProjectVisibility = Literal["org", "private"]
PROJECT_KINDS: tuple[str, ...] = ("software", "research", "marketing", "design", "event", "operations", "other")


@dataclass(frozen=True, slots=True)
class ProjectRecord:
    id: str
    org_id: str
    title: str
    description: str
    user_id: str | None = None
    kind: str = "other"
    visibility: ProjectVisibility = "private"
    api_key_id: str | None = None
    created_at: datetime | None = None


class ArtifactSink(Protocol):
    """Stores the artifacts the assistant generates and reads them back, on behalf of a principal."""

    async def save(self, principal: Principal, draft: ArtifactDraft, *,
                   thread_id: str | None = None) -> StoredArtifact:
        """Store ``draft`` as a new artifact owned by ``principal``; ``thread_id``: the agent thread whose
        run made it (the artifact is erased with that thread)."""
        ...

    async def read(self, principal: Principal, artifact_id: str) -> StoredArtifact | None:
        """The artifact, or None when it does not exist or ``principal`` may not read it (the same answer
        for both, so ids of other people's artifacts cannot be probed)."""
        ...


class ProjectRecords(Protocol):
    """Creates project records on behalf of a principal."""

    async def create(self, principal: Principal, title: str, description: str, *, kind: str = "other",
                     visibility: ProjectVisibility = "private") -> ProjectRecord:
        """Create a project owned by ``principal`` (``kind`` one of ``PROJECT_KINDS``); raises
        ``atrium.errors.Forbidden`` when ``principal`` may not create one and ``InvalidRequest`` for a bad
        title (1 to 100 characters) or kind."""
        ...
