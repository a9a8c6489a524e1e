"""``POST /api/v1/documents`` with a JSON body ``{"url", ...}``: ingest a web page (and, to ``depth``, the
same-site pages it links to) by a background job, like an upload.

The route shares its path and method with the multipart upload (``documents.py``): a request is routed
here by its ``Content-Type`` (``application/json``), everything else goes to the upload. The operation in
the OpenAPI document is the upload's, which lists this JSON body as a second request content type.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.routing import Match
from starlette.types import Scope

from atrium.errors import NotReady
from atrium.http.deps import JobsDep, PrincipalDep, ServicesDep, require_role
from atrium.http.schemas.documents import UploadAccepted
from atrium.knowledge.web.job import UrlRequest


class UrlIngestRequest(BaseModel):
    """A web page to ingest. ``depth``: how many link levels to follow (same site only); ``max_pages``: the
    most pages fetched (default and ceiling in ``knowledge.web``); ``render``: ``static`` (plain HTTP),
    ``browser`` (Chromium, for pages built by scripts), or ``auto`` (the browser when the plain page has
    next to no text)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=1, max_length=1000)
    collection: str = Field("default", min_length=1, max_length=100)
    depth: int = Field(0, ge=0, le=3)
    max_pages: int | None = Field(None, ge=1, le=10_000)
    render: Literal["auto", "static", "browser"] = "auto"


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            media = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return False


class JsonBodyRoute(APIRoute):
    """Matches only requests whose body is JSON, so the upload route of the same path takes the rest."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        match, child = super().matches(scope)
        if match is Match.FULL and not _is_json(scope):
            return Match.NONE, {}
        return match, child


# The upload operation documents this body too (``documents.py`` merges it into its requestBody).
OPENAPI_JSON_BODY: dict[str, Any] = {"requestBody": {"content": {"application/json": {
    "schema": UrlIngestRequest.model_json_schema()}}}}

router = APIRouter(prefix="/api/v1", tags=["documents"], route_class=JsonBodyRoute)


@router.post("/documents", status_code=202, dependencies=[require_role("member")], response_model=UploadAccepted,
             include_in_schema=False)
async def ingest_url(body: UrlIngestRequest, principal: PrincipalDep, services: ServicesDep, jobs: JobsDep,
                     idempotency_key: Annotated[str | None, Header(min_length=1, max_length=100)] = None,
                     ) -> UploadAccepted:
    """Check the URL (``invalid_url``, ``url_not_allowed``) and queue its ingestion; answer the job to poll."""
    if services.urls is None:
        raise NotReady("URL ingestion is not configured.")
    request = UrlRequest(url=body.url, collection=body.collection, depth=body.depth, max_pages=body.max_pages,
                         render=body.render)
    return UploadAccepted.of(await services.urls.queue(jobs, principal, request, idempotency_key=idempotency_key))
