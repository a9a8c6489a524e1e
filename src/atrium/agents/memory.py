"""In-memory adapters of the assistant's ports, for tests and demos (nothing survives the process)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from atrium.accounts.principal import Principal
from atrium.agents.ports import ArtifactDraft, ProjectRecord, ProjectVisibility, StoredArtifact
from atrium.errors import Forbidden, InvalidRequest

MAX_PROJECT_TITLE = 100


@dataclass
class InMemoryArtifactSink:
    """ArtifactSink adapter in a dict. An artifact is readable by the principal that made it (same user,
    or same API key when no user) in the same organisation; nobody else."""

    artifacts: dict[str, StoredArtifact] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def save(self, principal: Principal, draft: ArtifactDraft, *,
                   thread_id: str | None = None) -> StoredArtifact:
        artifact = StoredArtifact(id=f"art_{next(self._ids)}", org_id=principal.org_id, kind=draft.kind,
                                  title=draft.title, description=draft.description, content=draft.content,
                                  language=draft.language, user_id=principal.user_id,
                                  api_key_id=None if principal.user_id else principal.api_key_id)
        self.artifacts[artifact.id] = artifact
        return artifact

    async def read(self, principal: Principal, artifact_id: str) -> StoredArtifact | None:
        artifact = self.artifacts.get(artifact_id)
        if artifact is None or artifact.org_id != principal.org_id:
            return None
        if artifact.user_id is not None:
            return artifact if artifact.user_id == principal.user_id else None
        return artifact if artifact.api_key_id == principal.api_key_id else None


@dataclass
class InMemoryProjectRecords:
    """ProjectRecords adapter in a dict: members and above may create projects, viewers may not."""

    projects: dict[str, ProjectRecord] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    async def create(self, principal: Principal, title: str, description: str, *, kind: str = "other",
                     visibility: ProjectVisibility = "private") -> ProjectRecord:
        if not principal.has_role("member"):
            raise Forbidden("Viewers may not create projects.")
        title = title.strip()
        if not title or len(title) > MAX_PROJECT_TITLE:
            raise InvalidRequest(f"A project title has 1 to {MAX_PROJECT_TITLE} characters.")
        record = ProjectRecord(id=f"prj_{next(self._ids)}", org_id=principal.org_id, title=title,
                               description=description.strip(), user_id=principal.user_id, kind=kind,
                               visibility=visibility)
        self.projects[record.id] = record
        return record
