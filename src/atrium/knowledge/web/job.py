"""URL ingestion as a use case: check and queue a request (``POST /api/v1/documents`` with ``{"url"}``), and
the ``ingest_url`` job that crawls it and stores each page as a document whose ``source`` is the page's URL
(so ingesting the same URL again updates that document in place; an unchanged page costs nothing).

The job's result lists the pages ingested and those skipped (with their error code: ``robots_disallowed``,
``url_not_allowed``, ``fetch_failed``, ``too_large``, ``unsupported_file_type``...). When not one page could
be ingested the job fails, its error starting with the first page's code (``robots_disallowed: ...``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from atrium.accounts.ownership import owner_of, principal_session
from atrium.accounts.principal import Principal
from atrium.errors import AppError, InvalidRequest, PayloadTooLarge
from atrium.guard.egress import EgressGuard
from atrium.guard.egress_transport import guarded_client
from atrium.jobs.ports import ProgressFn
from atrium.jobs.queue import DatabaseJobQueue
from atrium.knowledge import collections as collections_repo
from atrium.knowledge.documents import Upload, owner_key
from atrium.knowledge.parsing import ParsedDocument
from atrium.knowledge.service import KnowledgeService, check_collection
from atrium.knowledge.web.crawl import Crawler, CrawlReport, Renderer, RenderMode
from atrium.knowledge.web.fetch import PageFetcher
from atrium.knowledge.web.settings import WebSettings
from atrium.store.models import Job

URL_JOB = "ingest_url"


@dataclass(frozen=True, slots=True)
class UrlRequest:
    url: str
    collection: str = "default"
    depth: int = 0
    max_pages: int | None = None
    render: RenderMode = "auto"


class UrlIngestion:
    """Everything URL ingestion needs, built once (``container.py``): the egress guard, the guarded HTTP
    client (closed by :meth:`aclose`), the crawler and, when the ``browser`` extra and Chromium are there,
    the renderer."""

    def __init__(self, knowledge: KnowledgeService, guard: EgressGuard, settings: WebSettings,
                 renderer: Renderer | None = None, client: httpx.AsyncClient | None = None) -> None:
        self.knowledge = knowledge
        self.guard = guard
        self.settings = settings
        self.client = client or guarded_client(guard, timeout=settings.timeout_s, max_redirects=settings.max_redirects,
                                               user_agent=settings.user_agent)
        self.crawler = Crawler(PageFetcher(self.client, settings), settings, renderer, guard)

    async def aclose(self) -> None:
        await self.client.aclose()
        closer = getattr(self.crawler.renderer, "aclose", None)
        if closer is not None:
            await closer()

    def check_request(self, request: UrlRequest) -> int:
        """The request's page budget; ``InvalidRequest`` for a depth or page count past the settings."""
        check_collection(request.collection)
        if not 0 <= request.depth <= self.settings.max_depth:
            raise InvalidRequest(f"depth must be between 0 and {self.settings.max_depth}.")
        pages = request.max_pages or self.settings.max_pages
        if pages > self.settings.max_pages_limit:
            raise PayloadTooLarge(f"At most {self.settings.max_pages_limit} pages per request.")
        return pages

    async def queue(self, jobs: DatabaseJobQueue, principal: Principal, request: UrlRequest, *,
                    idempotency_key: str | None = None) -> Upload:
        """Check the URL now (``invalid_url``, ``url_not_allowed``: the same check every fetch makes) and the
        collection (one the caller may write, or a new one of its own), then queue the crawl."""
        pages = self.check_request(request)
        key = f"url:{owner_key(principal)}:{idempotency_key}" if idempotency_key is not None else None
        if key is not None and (existing := await jobs.find_by_key(principal.org_id, key)) is not None:
            job = await jobs.get(principal.org_id, existing, owner=owner_of(principal))
            return Upload(job_id=job.id, collection=str(job.payload["collection"]), sources=[str(job.payload["url"])])
        self.guard.parse(request.url)  # invalid_url before anything else
        # The address is checked before the transaction (no lock held over DNS), but url_not_allowed is told
        # only to a caller who may write there, and raised inside it: a refused URL leaves no new collection.
        refusal: AppError | None = None
        try:
            await self.guard.check(request.url)
        except AppError as error:
            refusal = error
        async with principal_session(self.knowledge.db, principal) as session:
            await collections_repo.for_upload(session, principal, request.collection)
            if refusal is not None:
                raise refusal
        payload = {"url": request.url, "collection": request.collection, "depth": request.depth,
                   "max_pages": pages, "render": request.render}
        job_id = await jobs.enqueue(principal.org_id, URL_JOB, payload, owner=owner_of(principal), idempotency_key=key)
        return Upload(job_id=job_id, collection=request.collection, sources=[request.url])

    async def ingest(self, tenant: str, request: UrlRequest, *, user_id: str | None = None,
                     api_key_id: str | None = None, progress: ProgressFn | None = None) -> CrawlReport:
        """Crawl ``request`` now and store each page (the job's work, and ``atrium ingest URL``'s)."""
        pages = self.check_request(request)

        async def on_page(url: str, parsed: ParsedDocument) -> dict[str, Any]:
            result = await self.knowledge.ingest_text(tenant, request.collection, url, parsed.text, parsed.title,
                                                      markdown=parsed.is_markdown, paged=parsed.paged,
                                                      file_type=parsed.file_type, user_id=user_id,
                                                      api_key_id=api_key_id)
            return {"document_id": result.document_id, "chunks": result.chunks, "status": result.status}

        async def on_progress(done: int, total: int) -> None:
            if progress is not None:
                await progress(min(1.0, done / total))

        return await self.crawler.crawl(request.url, on_page, depth=request.depth, max_pages=pages,
                                        render=request.render, progress=on_progress)

    def job_handler(self) -> Callable[[Job, ProgressFn], Awaitable[dict[str, Any]]]:
        async def handle(job: Job, progress: ProgressFn) -> dict[str, Any]:
            p = job.payload
            request = UrlRequest(url=p["url"], collection=p["collection"], depth=int(p["depth"]),
                                 max_pages=int(p["max_pages"]), render=p["render"])
            report = await self.ingest(job.org_id, request, user_id=job.user_id, api_key_id=job.api_key_id,
                                       progress=progress)
            if not report.pages and report.skipped:
                first = report.skipped[0]
                raise AppError(f"{first['code']}: {first['message']}", code=first["code"])
            return report.to_dict()

        return handle
