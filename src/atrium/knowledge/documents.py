"""The documents use cases: upload (the files are saved and their ingestion queued as a job), list, get and
delete what the caller may read, and the status of a job the caller queued. Each returns rows or a domain
object; a document in a collection the caller may not read is ``NotFound``."""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import anyio
from sqlalchemy.ext.asyncio import AsyncSession

from atrium.accounts.ownership import Owner, owner_of, principal_session
from atrium.accounts.principal import Principal
from atrium.errors import InvalidRequest, NotFound, PayloadTooLarge
from atrium.jobs.queue import DatabaseJobQueue
from atrium.knowledge import collections as collections_repo
from atrium.knowledge import repository as repo
from atrium.knowledge.parsing import is_supported, parse_document, unsupported
from atrium.knowledge.service import KnowledgeService, check_collection
from atrium.store.models import Document, Job
from atrium.store.objects.ports import ObjectStore

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class IncomingFile(Protocol):
    """An uploaded file as the edge received it (Starlette's ``UploadFile`` is one)."""

    @property
    def filename(self) -> str | None: ...

    async def read(self) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Upload:
    """Files saved and queued for ingestion by the job ``job_id``."""

    job_id: str
    collection: str
    sources: list[str]


async def upload(knowledge: KnowledgeService, jobs: DatabaseJobQueue, principal: Principal,
                 files: Sequence[IncomingFile], collection: str, *, store: ObjectStore, max_files: int,
                 max_bytes: int, idempotency_key: str | None = None) -> Upload:
    """Save the files (at most ``max_files``, each supported, decodable and at most ``max_bytes`` long) in a
    new folder ``<org>/<random>`` of the object ``store`` and queue their ingestion into ``collection`` (one
    the caller may write, or a new one of its own): the files are stored before the job exists, so whichever
    process runs it finds them. With ``idempotency_key``, an upload the same caller already made under that
    key is answered with its job, and nothing is saved or queued again (a client retrying after a lost
    answer). The folder is deleted when the job ends (``knowledge/ingest.py``: ``upload_cleanup``)."""
    check_collection(collection)
    key = f"upload:{owner_key(principal)}:{idempotency_key}" if idempotency_key is not None else None
    if key is not None and (existing := await jobs.find_by_key(principal.org_id, key)) is not None:
        return await _upload_of(jobs, principal, existing)
    async with principal_session(knowledge.db, principal) as session:
        await collections_repo.for_upload(session, principal, collection)
    if not files:
        raise InvalidRequest("Send at least one file in the 'files' field.")
    if len(files) > max_files:
        raise PayloadTooLarge(f"At most {max_files} files per upload.")
    folder_name = f"{principal.org_id}/{uuid.uuid4().hex}"
    stored: list[dict[str, str]] = []
    try:
        for number, incoming in enumerate(files):
            name = Path(incoming.filename or "").name
            if not name or not is_supported(name):
                raise unsupported(name or "(unnamed file)")
            stored_as = f"{number:03d}-{_UNSAFE.sub('_', name)[:100]}"
            data = await incoming.read()
            if len(data) > max_bytes:
                raise PayloadTooLarge(f"{name} is larger than {max_bytes} bytes.")
            # Refuse unreadable input now, not later in the job (off the event loop: a PDF takes a while).
            await anyio.to_thread.run_sync(parse_document, name, data)
            await store.put(f"{folder_name}/{stored_as}", data)
            stored.append({"stored_as": stored_as, "source": name})
        job_id = await jobs.enqueue(principal.org_id, "ingest",
                                    {"collection": collection, "folder": folder_name, "files": stored},
                                    owner=owner_of(principal), idempotency_key=key)
    except BaseException:
        with contextlib.suppress(Exception):  # the store may be what failed: the first error is the answer
            await store.delete_folder(folder_name)
        raise
    if key is not None:  # a retry with the same key that raced this one may have queued first: its job
        job = await jobs.get(principal.org_id, job_id, owner=owner_of(principal))
        if job.payload["folder"] != folder_name:
            await store.delete_folder(folder_name)
            return _upload_from(job)
    return Upload(job_id=job_id, collection=collection, sources=[item["source"] for item in stored])


def owner_key(principal: Principal) -> str:
    """Who an idempotency key belongs to: the same key from another user or key is another upload."""
    owner = owner_of(principal)
    return f"u:{owner.user_id}" if owner.user_id is not None else f"k:{owner.api_key_id}"


async def _upload_of(jobs: DatabaseJobQueue, principal: Principal, job_id: str) -> Upload:
    return _upload_from(await jobs.get(principal.org_id, job_id, owner=owner_of(principal)))


def _upload_from(job: Job) -> Upload:
    return Upload(job_id=job.id, collection=str(job.payload["collection"]),
                  sources=[str(item["source"]) for item in job.payload["files"]])


async def list_documents(knowledge: KnowledgeService, principal: Principal, *, collection: str | None, limit: int,
                         offset: int) -> list[Document]:
    """The documents of ``collection`` (``NotFound`` if the caller may not read it), or of every collection
    the caller may read."""
    async with principal_session(knowledge.db, principal) as session:
        names = await collections_repo.searchable(session, principal, [collection] if collection else None)
        return await repo.list_documents(session, principal.org_id, names, limit, offset)


async def _readable(session: AsyncSession, principal: Principal, document_id: str) -> Document:
    document = await repo.get_document(session, principal.org_id, document_id)
    if document is None:
        raise NotFound("No such document.")
    try:
        await collections_repo.get_readable(session, principal, document.collection)
    except NotFound:
        raise NotFound("No such document.") from None
    return document


async def get_document(knowledge: KnowledgeService, principal: Principal, document_id: str) -> Document:
    async with principal_session(knowledge.db, principal) as session:
        return await _readable(session, principal, document_id)


async def delete_document(knowledge: KnowledgeService, principal: Principal, document_id: str) -> None:
    """Whoever may write the document's collection may delete it (with its chunks and vectors)."""
    async with principal_session(knowledge.db, principal) as session:
        document = await _readable(session, principal, document_id)
        await collections_repo.get_writable(session, principal, document.collection)
    await knowledge.delete_document(principal.org_id, document_id)


async def get_job(jobs: DatabaseJobQueue, principal: Principal, job_id: str) -> Job:
    """A job the caller queued; anyone else's is ``NotFound``. An admin also reads Atrium's own jobs (no
    owner: re-embedding after a change of embedding model, ``knowledge/reembed.py``)."""
    try:
        return await jobs.get(principal.org_id, job_id, owner=owner_of(principal))
    except NotFound:
        if not principal.has_role("admin"):
            raise
        return await jobs.get(principal.org_id, job_id, owner=Owner(None, None))
