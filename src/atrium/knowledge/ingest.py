"""Ingest files: walk paths, parse supported files, hand each to ``KnowledgeService.ingest_text``.

Used by ``atrium ingest`` (local paths), the upload job (files the API saved in the object store), and the
demo collection.
A document's ``source`` is its path relative to the directory given (or its file name), so re-ingesting
the same tree updates documents in place instead of duplicating them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from atrium.errors import AppError, InvalidRequest
from atrium.jobs.ports import JobWatcher, ProgressFn
from atrium.knowledge.parsing import is_supported, parse_document, unsupported
from atrium.knowledge.service import IngestResult, KnowledgeService
from atrium.store.models import Job
from atrium.store.objects.ports import ObjectStore, ObjectStoreUnavailable

UPLOAD_JOB = "ingest"
ENDED = ("succeeded", "failed", "cancelled")

FileProgress = Callable[[int, int, IngestResult | None], Awaitable[None]]


@dataclass(slots=True)
class IngestSummary:
    results: list[IngestResult] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for result in self.results:
            counts[result.status] = counts.get(result.status, 0) + 1
        return {
            "documents": [{"document_id": r.document_id, "source": r.source, "chunks": r.chunks,
                           "status": r.status} for r in self.results],
            "errors": self.errors,
            "counts": counts,
            "chunks": sum(r.chunks for r in self.results),
        }


def discover(paths: Iterable[Path]) -> list[tuple[Path, str]]:
    """Every supported file under ``paths`` with its source name, sorted, without duplicates."""
    found: dict[str, Path] = {}
    for root in paths:
        if root.is_dir():
            for path in sorted(root.rglob("*")):
                if path.is_file() and is_supported(path.name):
                    found.setdefault(path.relative_to(root).as_posix(), path)
        elif root.is_file():
            if not is_supported(root.name):
                raise unsupported(root.name)
            found.setdefault(root.name, root)
        else:
            raise InvalidRequest(f"{root}: no such file or directory")
    return [(path, source) for source, path in sorted(found.items())]


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A file to ingest: ``name`` (its type is judged by it), the document's ``source``, and how to read it."""

    name: str
    source: str
    read: Callable[[], Awaitable[bytes]]


class StoreUnreachable(Exception):
    """The object store failed while a job read its files: not the input's fault, so the job is retried
    (deliberately not an ``AppError``, which would fail the file, or the job, for good)."""


async def ingest_files(service: KnowledgeService, tenant: str, collection: str,
                       files: list[tuple[Path, str]], on_file: FileProgress | None = None, *,
                       user_id: str | None = None, api_key_id: str | None = None) -> IngestSummary:
    """Ingest local files (``path``, ``source``) one by one; see ``ingest_sources``."""
    return await ingest_sources(service, tenant, collection,
                                [SourceFile(path.name, source, anyio.Path(path).read_bytes) for path, source in files],
                                on_file, user_id=user_id, api_key_id=api_key_id)


async def ingest_sources(service: KnowledgeService, tenant: str, collection: str, files: Sequence[SourceFile],
                         on_file: FileProgress | None = None, *, user_id: str | None = None,
                         api_key_id: str | None = None) -> IngestSummary:
    """Read, parse and ingest each file; a file that fails with a typed error is recorded in the summary's
    ``errors`` and the others go on."""
    summary = IngestSummary()
    for done, file in enumerate(files, start=1):
        result: IngestResult | None = None
        source = file.source
        try:
            data = await file.read()
            parsed = await anyio.to_thread.run_sync(parse_document, file.name, data)
            result = await service.ingest_text(tenant, collection, source, parsed.text, parsed.title,
                                                 markdown=parsed.is_markdown, paged=parsed.paged,
                                                 file_type=parsed.file_type, user_id=user_id,
                                                 api_key_id=api_key_id)
            summary.results.append(result)
        except AppError as exc:
            summary.errors.append({"source": source, "code": exc.code, "message": exc.message})
        if on_file is not None:
            await on_file(done, len(files), result)
    return summary


def upload_job_handler(service: KnowledgeService, store: ObjectStore) -> Callable[[Job, ProgressFn],
                                                                                Awaitable[dict[str, Any]]]:
    """The ``ingest`` job: files the API saved in the object ``store`` under ``<payload folder>/`` (they are
    deleted when the job ends, whatever the end: ``upload_cleanup``). A file that is gone is an error of that
    file; a store that cannot be reached fails the run, which is retried after the queue's backoff."""

    def reader(key: str) -> Callable[[], Awaitable[bytes]]:
        async def read() -> bytes:
            try:
                return await store.get(key)
            except ObjectStoreUnavailable as exc:
                raise StoreUnreachable(exc.message) from exc

        return read

    async def handle(job: Job, progress: ProgressFn) -> dict[str, Any]:
        folder = job.payload["folder"]
        files = [SourceFile(item["stored_as"], item["source"], reader(f"{folder}/{item['stored_as']}"))
                 for item in job.payload["files"]]

        async def on_file(done: int, total: int, _result: IngestResult | None) -> None:
            await progress(done / total)

        summary = await ingest_sources(service, job.org_id, job.payload["collection"], files, on_file,
                                       user_id=job.user_id, api_key_id=job.api_key_id)
        return summary.to_dict()

    return handle


def upload_cleanup(store: ObjectStore) -> JobWatcher:
    """The job queue's watcher that deletes an upload job's files from the store when the job ends:
    succeeded, failed for good (a retry keeps them), or cancelled (queued or running)."""

    async def cleanup(job: Job) -> None:
        payload = job.payload if isinstance(job.payload, dict) else {}
        if job.kind == UPLOAD_JOB and job.status in ENDED and isinstance(payload.get("folder"), str):
            await store.delete_folder(payload["folder"])

    return cleanup
