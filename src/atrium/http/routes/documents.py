"""Documents: upload (ingested by a background job), list, get, delete; and job status and cancellation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Header, Query, UploadFile

from atrium.accounts.ownership import owner_of
from atrium.http.deps import (
    JobsDep,
    KnowledgeDep,
    ObjectStoreDep,
    Offset,
    PrincipalDep,
    ResourceId,
    SettingsDep,
    require_role,
)
from atrium.http.routes.document_urls import OPENAPI_JSON_BODY
from atrium.http.schemas.documents import DocumentList, DocumentView, JobView, UploadAccepted
from atrium.http.schemas.errors import AUTHENTICATED, error_responses
from atrium.knowledge import documents

router = APIRouter(prefix="/api/v1", tags=["documents"], responses=AUTHENTICATED)
_NOT_FOUND = error_responses(404)


@router.post("/documents", status_code=202, dependencies=[require_role("member")], response_model=UploadAccepted,
             responses=error_responses(400, 404, 409, 413, 502, 503),  # 400: a body that is not valid multipart
             openapi_extra=OPENAPI_JSON_BODY)  # or JSON {"url"}: routes/document_urls.py (502: fetch_failed)
async def upload(principal: PrincipalDep, knowledge: KnowledgeDep, jobs: JobsDep, settings: SettingsDep,
                 store: ObjectStoreDep,
                 files: Annotated[list[UploadFile], File(description="Text, Markdown, HTML, PDF, DOCX or CSV files")],
                 collection: Annotated[str, Form(max_length=100)] = "default",
                 idempotency_key: Annotated[str | None, Header(min_length=1, max_length=100, description=(
                     "Sent again with a retried upload: the first upload's job is answered, nothing is "
                     "ingested twice (per caller)."))] = None) -> UploadAccepted:
    """Save the files, queue their ingestion, and answer at once with the job to poll. With a JSON body
    ``{"url", "collection"?, "depth"?, "max_pages"?, "render"?}`` instead: queue the ingestion of that web
    page (``invalid_url``, ``url_not_allowed`` when the address is refused)."""
    accepted = await documents.upload(knowledge, jobs, principal, files, collection, store=store,
                                      max_files=settings.limits.max_files_per_upload,
                                      max_bytes=settings.limits.max_upload_bytes, idempotency_key=idempotency_key)
    return UploadAccepted.of(accepted)


@router.get("/documents", response_model=DocumentList, responses=_NOT_FOUND)  # 404: no such collection
async def list_documents(principal: PrincipalDep, knowledge: KnowledgeDep,
                         collection: Annotated[str | None, Query(max_length=100)] = None,
                         limit: Annotated[int, Query(ge=1, le=200)] = 50,
                         offset: Offset = 0) -> DocumentList:
    rows = await documents.list_documents(knowledge, principal, collection=collection, limit=limit, offset=offset)
    return DocumentList(documents=[DocumentView.of(row) for row in rows])


@router.get("/documents/{document_id}", response_model=DocumentView, responses=_NOT_FOUND)
async def get_document(document_id: ResourceId, principal: PrincipalDep, knowledge: KnowledgeDep) -> DocumentView:
    return DocumentView.of(await documents.get_document(knowledge, principal, document_id))


@router.delete("/documents/{document_id}", status_code=204, dependencies=[require_role("member")],
               responses=_NOT_FOUND)
async def delete_document(document_id: ResourceId, principal: PrincipalDep, knowledge: KnowledgeDep) -> None:
    """Whoever may write the document's collection may delete it."""
    await documents.delete_document(knowledge, principal, document_id)


@router.get("/jobs/{job_id}", response_model=JobView, responses=_NOT_FOUND)
async def get_job(job_id: ResourceId, principal: PrincipalDep, jobs: JobsDep) -> JobView:
    """A job the caller queued; anyone else's is ``404``."""
    return JobView.of(await documents.get_job(jobs, principal, job_id))


@router.post("/jobs/{job_id}/cancel", response_model=JobView, responses=_NOT_FOUND)
async def cancel_job(job_id: ResourceId, principal: PrincipalDep, jobs: JobsDep) -> JobView:
    """Cancel a job the caller queued: a queued one at once, a running one at its next step (poll it until
    ``cancelled``); one that ended is left as it is. Anyone else's is ``404``."""
    return JobView.of(await jobs.cancel(principal.org_id, job_id, owner=owner_of(principal)))
