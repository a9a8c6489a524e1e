"""Ingest files: walk paths, parse supported files, hand each to ``KnowledgeService.ingest_text``.

Used by ``atrium ingest`` (local paths), the upload job (files saved by the API), and the demo collection.
A document's ``source`` is its path relative to the directory given (or its file name), so re-ingesting
the same tree updates documents in place instead of duplicating them.
"""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from atrium.errors import AppError, InvalidRequest
from atrium.jobs.ports import ProgressFn
from atrium.knowledge.parsing import is_supported, parse_document, unsupported
from atrium.knowledge.service import IngestResult, KnowledgeService
from atrium.store.models import Job

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


async def ingest_files(service: KnowledgeService, tenant: str, collection: str,
                       files: list[tuple[Path, str]], on_file: FileProgress | None = None, *,
                       user_id: str | None = None, api_key_id: str | None = None) -> IngestSummary:
    summary = IngestSummary()
    for done, (path, source) in enumerate(files, start=1):
        result: IngestResult | None = None
        try:
            data = await anyio.Path(path).read_bytes()
            parsed = await anyio.to_thread.run_sync(parse_document, path.name, data)
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


def upload_job_handler(service: KnowledgeService, uploads_dir: Path) -> Callable[[Job, ProgressFn],
                                                                               Awaitable[dict[str, Any]]]:
    """The ``ingest`` job: files the API saved under ``uploads_dir/<payload folder>/``, removed when done."""

    async def handle(job: Job, progress: ProgressFn) -> dict[str, Any]:
        folder = uploads_dir / job.payload["folder"]
        files = [(folder / item["stored_as"], item["source"]) for item in job.payload["files"]]

        async def on_file(done: int, total: int, _result: IngestResult | None) -> None:
            await progress(done / total)

        summary = await ingest_files(service, job.org_id, job.payload["collection"], files, on_file,
                                     user_id=job.user_id, api_key_id=job.api_key_id)
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(folder, ignore_errors=True))
        return summary.to_dict()

    return handle
