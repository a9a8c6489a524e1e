"""Documents, their collections and ingestion jobs."""

from __future__ import annotations

from typing import Any, Literal

from atrium.http.schemas.common import Timestamp, View


class UploadAccepted(View):
    job_id: str
    status: Literal["queued"]
    collection: str
    files: list[str]


class DocumentView(View):
    id: str
    collection: str
    source: str
    uploaded_by: str | None
    title: str
    size_bytes: int
    chunks: int
    created_at: Timestamp


class DocumentList(View):
    documents: list[DocumentView]


class JobView(View):
    id: str
    kind: str
    status: Literal["queued", "running", "succeeded", "failed"]
    progress: float
    result: dict[str, Any] | None
    error: str | None
    created_at: Timestamp
    updated_at: Timestamp


class CollectionView(View):
    name: str
    visibility: Literal["org", "division", "private"]
    writers: Literal["owner", "readers"]
    division_id: str | None
    owner_user_id: str | None
    created_at: Timestamp
    can_write: bool
    can_manage: bool


class CollectionList(View):
    collections: list[CollectionView]
    next_offset: int | None
