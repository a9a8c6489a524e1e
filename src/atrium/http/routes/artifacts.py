"""Artifacts: typed documents (markdown, code, checklist, table, JSON) made by the caller or written by the
model, every edit a new version, searchable, shared like collections (private by default)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from atrium.errors import InvalidRequest, PayloadTooLarge
from atrium.http.deps import (
    ArtifactsDep,
    LimitedPrincipalDep,
    LimitsDep,
    Offset,
    PrincipalDep,
    ResourceId,
    require_role,
)
from atrium.http.routes.chat import checked_message
from atrium.http.schemas.artifacts import (
    CONTENT_DOC,
    ArtifactHitView,
    ArtifactKind,
    ArtifactList,
    ArtifactSearchResponse,
    ArtifactSummary,
    ArtifactView,
    ExportedJson,
    VersionList,
    VersionSummary,
    VersionView,
    Visibility,
)
from atrium.http.schemas.errors import AUTHENTICATED, BODY, LIMITED, MODEL_CALL, error_responses

router = APIRouter(prefix="/api/v1/artifacts", tags=["artifacts"], responses=AUTHENTICATED)
_NOT_FOUND = error_responses(404)
VersionNumber = Annotated[int, Path(ge=1, le=1_000_000)]
ConversationId = Annotated[str | None, Field(min_length=1, max_length=64,
                                             description="Attach it to this conversation of the caller's.")]


class ArtifactCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "kind": "checklist", "title": "Launch", "content": {"items": [{"text": "Write the post", "done": False}]}}]})
    kind: ArtifactKind
    title: str = Field(min_length=1, max_length=200)
    description: str = Field("", max_length=2000)
    content: dict[str, Any] = Field(description=CONTENT_DOC)
    visibility: Visibility | None = Field(None, description="Default: private.")
    conversation_id: ConversationId = None


class ArtifactGenerate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "prompt": "A checklist for shipping a release", "kind": "checklist"}]})
    prompt: str = Field(min_length=1)
    kind: ArtifactKind | None = Field(None, description="Default: the kind the model finds fitting.")
    conversation_id: ConversationId = None
    collection: str | None = Field(None, min_length=1, max_length=100,
                                   description="Ground the artifact on this collection's passages.")
    visibility: Visibility | None = Field(None, description="Default: private.")


class ArtifactChange(BaseModel):
    """What to change: title, description and content make a new version; visibility does not."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"title": "Launch (v2)"}]})
    title: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = Field(None, max_length=2000)
    content: dict[str, Any] | None = Field(None, description=CONTENT_DOC)
    visibility: Visibility | None = None


class ArtifactSearch(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"query": "release checklist"}]})
    query: str = Field(min_length=1)
    limit: int = Field(10, ge=1)
    kind: ArtifactKind | None = None
    mode: Literal["hybrid", "vector", "keyword"] = "hybrid"


@router.post("/generate", status_code=201, response_model=ArtifactView,
             responses={**LIMITED, **MODEL_CALL, **error_responses(404)})  # 404: no such conversation or collection
async def generate(body: ArtifactGenerate, principal: LimitedPrincipalDep, artifacts: ArtifactsDep,
                   limits: LimitsDep) -> ArtifactView:
    """Ask the model for an artifact (one repair attempt if its answer is not a valid one: then `502`
    `invalid_model_output`) and store it as version 1."""
    prompt = checked_message(body.prompt, limits.max_message_chars)
    record = await artifacts.generate(principal, prompt, kind=body.kind, conversation_id=body.conversation_id,
                                      collection=body.collection, visibility=body.visibility)
    return ArtifactView.of_record(record, principal)


@router.post("", status_code=201, dependencies=[require_role("member")], response_model=ArtifactView,
             responses={**BODY, **_NOT_FOUND})  # 404: no such conversation
async def create(body: ArtifactCreate, principal: PrincipalDep, artifacts: ArtifactsDep) -> ArtifactView:
    record = await artifacts.create(principal, kind=body.kind, title=body.title, description=body.description,
                                    content=body.content, visibility=body.visibility,
                                    conversation_id=body.conversation_id)
    return ArtifactView.of_record(record, principal)


@router.get("", response_model=ArtifactList)
async def list_artifacts(principal: PrincipalDep, artifacts: ArtifactsDep, kind: ArtifactKind | None = None,
                         limit: Annotated[int, Query(ge=1, le=200)] = 50, offset: Offset = 0) -> ArtifactList:
    """The artifacts the caller may read, the last changed first."""
    rows = await artifacts.list_artifacts(principal, kind=kind, limit=limit, offset=offset)
    return ArtifactList(artifacts=[ArtifactSummary.of(row, principal) for row in rows],
                        next_offset=offset + limit if len(rows) == limit else None)


@router.post("/search", response_model=ArtifactSearchResponse, responses=LIMITED)
async def search(body: ArtifactSearch, principal: LimitedPrincipalDep, artifacts: ArtifactsDep,
                 limits: LimitsDep) -> ArtifactSearchResponse:
    """Hybrid, vector or keyword search over the current versions of the artifacts the caller may read."""
    if len(body.query) > limits.max_message_chars:
        raise PayloadTooLarge(f"query is longer than {limits.max_message_chars} characters.")
    if body.limit > limits.max_search_limit:
        raise InvalidRequest(f"limit must be at most {limits.max_search_limit}.")
    hits = await artifacts.search(principal, body.query, kind=body.kind, mode=body.mode, limit=body.limit)
    return ArtifactSearchResponse(results=[ArtifactHitView.of(hit, principal) for hit in hits])


@router.get("/{artifact_id}", response_model=ArtifactView, responses=_NOT_FOUND)
async def get_artifact(artifact_id: ResourceId, principal: PrincipalDep, artifacts: ArtifactsDep) -> ArtifactView:
    return ArtifactView.of_record(await artifacts.get(principal, artifact_id), principal)


@router.get("/{artifact_id}/versions", response_model=VersionList, responses=_NOT_FOUND)
async def list_versions(artifact_id: ResourceId, principal: PrincipalDep, artifacts: ArtifactsDep,
                        limit: Annotated[int, Query(ge=1, le=200)] = 50, offset: Offset = 0) -> VersionList:
    artifact, rows = await artifacts.versions(principal, artifact_id, limit=limit, offset=offset)
    return VersionList(artifact_id=artifact.id, current_version=artifact.current_version,
                       versions=[VersionSummary.of(row) for row in rows],
                       next_offset=offset + limit if len(rows) == limit else None)


@router.get("/{artifact_id}/versions/{number}", response_model=VersionView, responses=_NOT_FOUND)
async def get_version(artifact_id: ResourceId, number: VersionNumber, principal: PrincipalDep,
                      artifacts: ArtifactsDep) -> VersionView:
    return VersionView.of_record(await artifacts.get(principal, artifact_id, number))


@router.patch("/{artifact_id}", dependencies=[require_role("member")], response_model=ArtifactView,
              responses={**BODY, **_NOT_FOUND})
async def change(artifact_id: ResourceId, body: ArtifactChange, principal: PrincipalDep,
                 artifacts: ArtifactsDep) -> ArtifactView:
    """Edit (a new version, unless nothing changes) and/or share it differently."""
    record = await artifacts.edit(principal, artifact_id, title=body.title, description=body.description,
                                  content=body.content, visibility=body.visibility)
    return ArtifactView.of_record(record, principal)


@router.delete("/{artifact_id}", status_code=204, dependencies=[require_role("member")], responses=_NOT_FOUND)
async def delete(artifact_id: ResourceId, principal: PrincipalDep, artifacts: ArtifactsDep) -> None:
    """Delete the artifact, all its versions and its place in search."""
    await artifacts.delete(principal, artifact_id)


_EXPORTED = {media: {"schema": {"type": "string"}} for media in ("text/markdown", "text/plain", "text/csv")}


@router.get("/{artifact_id}/export", response_class=Response, responses={
    200: {"model": ExportedJson, "content": _EXPORTED,
          "description": "The version as a file: CSV for a table, Markdown for a document or checklist, the "
                         "source for code, the data for JSON."},
    **_NOT_FOUND})
async def export(artifact_id: ResourceId, principal: PrincipalDep, artifacts: ArtifactsDep,
                 version: Annotated[int | None, Query(ge=1, le=1_000_000)] = None) -> Response:
    exported = await artifacts.export(principal, artifact_id, version)
    return Response(exported.body, media_type=exported.media_type,
                    headers={"Content-Disposition": f'attachment; filename="{exported.filename}"'})
