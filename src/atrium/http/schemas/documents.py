"""Documents, their collections and ingestion jobs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from atrium.accounts.ownership import may_manage_collection, may_write_collection
from atrium.http.schemas.common import Timestamp, View

if TYPE_CHECKING:
    from atrium.accounts.principal import Principal
    from atrium.knowledge.documents import Upload
    from atrium.store.models import Collection, Document, Job


class UploadAccepted(View):
    job_id: str
    status: Literal["queued"]
    collection: str
    files: list[str]

    @classmethod
    def of(cls, upload: Upload) -> UploadAccepted:
        return cls(job_id=upload.job_id, status="queued", collection=upload.collection, files=upload.sources)


class DocumentView(View):
    id: str
    collection: str
    source: str
    uploaded_by: str | None
    title: str
    size_bytes: int
    chunks: int
    created_at: Timestamp

    @classmethod
    def of(cls, document: Document) -> DocumentView:
        return cls(id=document.id, collection=document.collection, source=document.source,
                   uploaded_by=document.user_id, title=document.title, size_bytes=document.size_bytes,
                   chunks=document.chunk_count, created_at=document.created_at.isoformat())


class DocumentList(View):
    documents: list[DocumentView]


class JobView(View):
    id: str
    kind: str
    status: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    progress: float
    result: dict[str, Any] | None
    error: str | None
    created_at: Timestamp
    updated_at: Timestamp

    @classmethod
    def of(cls, job: Job) -> JobView:
        return cls(id=job.id, kind=job.kind, status=job.status, progress=job.progress, result=job.result,
                   error=job.error, created_at=job.created_at.isoformat(), updated_at=job.updated_at.isoformat())


class CollectionView(View):
    name: str
    visibility: Literal["org", "division", "private"]
    writers: Literal["owner", "readers"]
    division_id: str | None
    owner_user_id: str | None
    created_at: Timestamp
    can_write: bool
    can_manage: bool
    embedding_model: str | None = Field(None, description=(
        "The embedding model its vectors were made with (null before its first document). While it differs "
        "from the configured model, a background job re-embeds the collection."))
    embedding_dimensions: int | None = None

    @classmethod
    def of(cls, row: Collection, principal: Principal) -> CollectionView:
        """The collection as ``principal`` sees it: whether it may write and manage it too."""
        return cls(name=row.name, visibility=row.visibility, writers=row.writers, division_id=row.division_id,
                   owner_user_id=row.user_id, created_at=row.created_at.isoformat(),
                   can_write=may_write_collection(row, principal),
                   can_manage=may_manage_collection(row, principal), embedding_model=row.embedding_model,
                   embedding_dimensions=row.embedding_dimensions)


class CollectionList(View):
    collections: list[CollectionView]
    next_offset: int | None
