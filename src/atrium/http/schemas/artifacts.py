"""Artifacts, their versions and search results."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, RootModel

from atrium.accounts.ownership import may_manage_collection
from atrium.http.schemas.common import Timestamp, View

if TYPE_CHECKING:
    from atrium.accounts.principal import Principal
    from atrium.conversations.artifacts.service import ArtifactHit, ArtifactRecord
    from atrium.store.models import Artifact, ArtifactVersion

ArtifactKind = Literal["markdown", "code", "checklist", "table", "json"]
Visibility = Literal["org", "division", "private"]
CONTENT_DOC = ("The content, by kind: markdown `{\"text\"}`; code `{\"language\", \"code\"}`; checklist "
               "`{\"items\": [{\"text\", \"done\"}]}`; table `{\"columns\": [names], \"rows\": [[cells]]}` (one "
               "string, number, boolean or null per column); json `{\"data\": any JSON value}`.")


class ArtifactSummary(View):
    id: str
    kind: ArtifactKind
    title: str
    description: str
    visibility: Visibility
    version: int = Field(description="The current version's number (1 for a new artifact).")
    conversation_id: str | None
    owner_user_id: str | None
    division_id: str | None
    created_at: Timestamp
    updated_at: Timestamp
    can_edit: bool = Field(description="Whether the caller may edit, share or delete it.")

    @classmethod
    def of(cls, row: Artifact, principal: Principal) -> ArtifactSummary:
        return cls(**_summary(row, principal))


def _summary(row: Artifact, principal: Principal) -> dict[str, Any]:
    return {"id": row.id, "kind": row.kind, "title": row.title, "description": row.description,
            "visibility": row.visibility, "version": row.current_version, "conversation_id": row.conversation_id,
            "owner_user_id": row.user_id, "division_id": row.division_id, "created_at": row.created_at.isoformat(),
            "updated_at": row.updated_at.isoformat(), "can_edit": may_manage_collection(row, principal)}


class ArtifactView(ArtifactSummary):
    """An artifact with its current version's content."""

    content: dict[str, Any] = Field(description=CONTENT_DOC)

    @classmethod
    def of_record(cls, record: ArtifactRecord, principal: Principal) -> ArtifactView:
        return cls(**_summary(record.artifact, principal), content=record.version.content)


class ArtifactList(View):
    artifacts: list[ArtifactSummary]
    next_offset: int | None


class VersionSummary(View):
    number: int
    title: str
    description: str
    created_by: str | None = Field(description="The user (or key without a user) that wrote this version.")
    created_at: Timestamp

    @classmethod
    def of(cls, row: ArtifactVersion) -> VersionSummary:
        return cls(number=row.number, title=row.title, description=row.description, created_by=row.created_by,
                   created_at=row.created_at.isoformat())


class VersionView(VersionSummary):
    artifact_id: str
    kind: ArtifactKind
    content: dict[str, Any] = Field(description=CONTENT_DOC)

    @classmethod
    def of_record(cls, record: ArtifactRecord) -> VersionView:
        version = record.version
        return cls(number=version.number, title=version.title, description=version.description,
                   created_by=version.created_by, created_at=version.created_at.isoformat(),
                   artifact_id=record.artifact.id, kind=record.artifact.kind, content=version.content)


class VersionList(View):
    artifact_id: str
    current_version: int
    versions: list[VersionSummary] = Field(description="The newest first.")
    next_offset: int | None


class ArtifactHitView(View):
    artifact: ArtifactSummary
    score: float
    snippet: str = Field(description="The start of the best matching passage.")

    @classmethod
    def of(cls, hit: ArtifactHit, principal: Principal) -> ArtifactHitView:
        return cls(artifact=ArtifactSummary.of(hit.artifact, principal), score=round(hit.score, 6),
                   snippet=hit.snippet)


class ArtifactSearchResponse(View):
    results: list[ArtifactHitView]


class ExportedJson(RootModel[Any]):
    """A ``json`` artifact's data as exported: any JSON value."""
