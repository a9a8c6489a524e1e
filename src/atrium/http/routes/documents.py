"""Documents: upload (ingested by a background job), list, get, delete; and job status."""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, File, Form, Query, UploadFile
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.accounts.ownership import owner_of, principal_session
from atrium.accounts.principal import Principal
from atrium.errors import InvalidRequest, NotFound, PayloadTooLarge
from atrium.http.deps import Offset, PrincipalDep, ResourceId, ServicesDep, require_role
from atrium.http.schemas.documents import DocumentList, DocumentView, JobView, UploadAccepted
from atrium.http.schemas.errors import AUTHENTICATED, error_responses
from atrium.knowledge import collections as collections_repo
from atrium.knowledge import repository as repo
from atrium.knowledge.parsing import is_supported, parse_document
from atrium.knowledge.service import check_collection
from atrium.store.files import private_dir, write_private
from atrium.store.models import Document, Job

router = APIRouter(prefix="/api/v1", tags=["documents"], responses=AUTHENTICATED)
_NOT_FOUND = error_responses(404)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
COPY_CHUNK = 1 << 20


def document_view(document: Document) -> dict[str, Any]:
    return {"id": document.id, "collection": document.collection, "source": document.source,
            "uploaded_by": document.user_id,
            "title": document.title, "size_bytes": document.size_bytes, "chunks": document.chunk_count,
            "created_at": document.created_at.isoformat()}


def job_view(job: Job) -> dict[str, Any]:
    return {"id": job.id, "kind": job.kind, "status": job.status, "progress": job.progress,
            "result": job.result, "error": job.error, "created_at": job.created_at.isoformat(),
            "updated_at": job.updated_at.isoformat()}


@router.post("/documents", status_code=202, dependencies=[require_role("member")], response_model=UploadAccepted,
             responses=error_responses(400, 404, 413))  # 400: a body that is not valid multipart
async def upload(principal: PrincipalDep, services: ServicesDep,
                 files: Annotated[list[UploadFile], File(description=".txt or .md files")],
                 collection: Annotated[str, Form(max_length=100)] = "default") -> dict[str, Any]:
    """Save the files, queue their ingestion, and answer at once with the job to poll."""
    check_collection(collection)
    async with principal_session(services.db, principal) as session:
        await collections_repo.for_upload(session, principal, collection)
    limits = services.settings.limits
    if not files:
        raise InvalidRequest("Send at least one file in the 'files' field.")
    if len(files) > limits.max_files_per_upload:
        raise PayloadTooLarge(f"At most {limits.max_files_per_upload} files per upload.")
    folder_name = uuid.uuid4().hex
    folder = services.settings.uploads_dir / folder_name
    stored: list[dict[str, str]] = []
    try:
        await anyio.to_thread.run_sync(private_dir, folder)
        for number, upload_file in enumerate(files):
            name = Path(upload_file.filename or "").name
            if not name or not is_supported(name):
                raise InvalidRequest(f"{name or '(unnamed file)'}: unsupported file type (use .txt or .md).")
            stored_as = f"{number:03d}-{_UNSAFE.sub('_', name)[:100]}"
            data = await upload_file.read()
            if len(data) > limits.max_upload_bytes:
                raise PayloadTooLarge(f"{name} is larger than {limits.max_upload_bytes} bytes.")
            parse_document(name, data)  # refuse undecodable input now, not later in the job
            await anyio.to_thread.run_sync(write_private, folder / stored_as, data)
            stored.append({"stored_as": stored_as, "source": name})
        job_id = await services.jobs.enqueue(principal.org_id, "ingest",
                                             {"collection": collection, "folder": folder_name, "files": stored},
                                             owner=owner_of(principal))
    except BaseException:
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(folder, ignore_errors=True))
        raise
    return {"job_id": job_id, "status": "queued", "collection": collection, "files": [s["source"] for s in stored]}


@router.get("/documents", response_model=DocumentList, responses=_NOT_FOUND)  # 404: no such collection
async def list_documents(principal: PrincipalDep, services: ServicesDep,
                         collection: Annotated[str | None, Query(max_length=100)] = None,
                         limit: Annotated[int, Query(ge=1, le=200)] = 50,
                         offset: Offset = 0) -> dict[str, Any]:
    async with principal_session(services.db, principal) as session:
        names = await collections_repo.searchable(session, principal, [collection] if collection else None)
        rows = await repo.list_documents(session, principal.org_id, names, limit, offset)
    return {"documents": [document_view(row) for row in rows]}


async def _readable_document(session: AsyncSession, principal: Principal, document_id: str) -> Document:
    document = await repo.get_document(session, principal.org_id, document_id)
    if document is None:
        raise NotFound("No such document.")
    try:
        await collections_repo.get_readable(session, principal, document.collection)
    except NotFound:
        raise NotFound("No such document.") from None
    return document


@router.get("/documents/{document_id}", response_model=DocumentView, responses=_NOT_FOUND)
async def get_document(document_id: ResourceId, principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    async with principal_session(services.db, principal) as session:
        document = await _readable_document(session, principal, document_id)
    return document_view(document)


@router.delete("/documents/{document_id}", status_code=204, dependencies=[require_role("member")],
               responses=_NOT_FOUND)
async def delete_document(document_id: ResourceId, principal: PrincipalDep, services: ServicesDep) -> None:
    """Whoever may write the document's collection may delete it."""
    async with principal_session(services.db, principal) as session:
        document = await _readable_document(session, principal, document_id)
        await collections_repo.get_writable(session, principal, document.collection)
    await services.knowledge.delete_document(principal.org_id, document_id)


@router.get("/jobs/{job_id}", response_model=JobView, responses=_NOT_FOUND)
async def get_job(job_id: ResourceId, principal: PrincipalDep, services: ServicesDep) -> dict[str, Any]:
    """A job the caller queued; anyone else's is ``404``."""
    return job_view(await services.jobs.get(principal.org_id, job_id, owner=owner_of(principal)))
