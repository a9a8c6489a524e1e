"""Crawl from a URL: the page, then (to ``depth`` link levels) the same-site pages it links to, at most
``max_pages`` fetched, each checked against robots.txt; each page handed to ``on_page`` as a parsed document.

A page that fails is recorded with its error code and skipped; the crawl goes on. Same-site means the same
scheme, host and port as the first page. In ``auto`` render mode a page whose static HTML yields almost no
text but carries scripts is rendered in the browser (when the browser is available).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import anyio

from atrium.errors import AppError
from atrium.guard.egress import EgressGuard
from atrium.knowledge.parsing import ParsedDocument
from atrium.knowledge.web.fetch import Page, PageFetcher, html_links, normalise, parse_page
from atrium.knowledge.web.robots import RobotsRules
from atrium.knowledge.web.settings import WebSettings

RenderMode = Literal["auto", "static", "browser"]
OnPage = Callable[[str, ParsedDocument], Awaitable[dict[str, Any]]]
Progress = Callable[[int, int], Awaitable[None]]


class Renderer:
    """Renders a URL in a browser and answers its final HTML as a page (``atrium.knowledge.web.browser``)."""

    async def render(self, url: str) -> Page:
        raise NotImplementedError


@dataclass(slots=True)
class CrawlReport:
    pages: list[dict[str, Any]] = field(default_factory=list)  # ingested: url, and what on_page answered
    skipped: list[dict[str, str]] = field(default_factory=list)  # url, code, message

    def to_dict(self) -> dict[str, Any]:
        """The job result: ``pages`` and ``skipped``, and (in the shape of an upload job's result, so a
        client or a notification reads either alike) ``documents``, ``errors`` and ``chunks``."""
        documents = [{"document_id": p.get("document_id"), "source": p["url"], "chunks": p.get("chunks", 0),
                      "status": p.get("status")} for p in self.pages]
        return {"pages": self.pages, "skipped": self.skipped,
                "counts": {"fetched": len(self.pages), "skipped": len(self.skipped)},
                "documents": documents, "chunks": sum(d["chunks"] or 0 for d in documents),
                "errors": [{"source": s["url"], "code": s["code"], "message": s["message"]} for s in self.skipped]}


class Crawler:
    def __init__(self, fetcher: PageFetcher, settings: WebSettings, renderer: Renderer | None = None,
                 guard: EgressGuard | None = None) -> None:
        self.fetcher = fetcher
        self.guard = guard
        self.settings = settings
        self.renderer = renderer

    async def crawl(self, start: str, on_page: OnPage, *, depth: int = 0, max_pages: int | None = None,
                    render: RenderMode = "auto", progress: Progress | None = None) -> CrawlReport:
        first = normalise(start) or start
        site = _site(first)
        budget = max_pages or self.settings.max_pages
        robots = RobotsRules(self.fetcher, self.settings.robots_agent, max_bytes=self.settings.max_robots_bytes,
                             guard=self.guard)
        queue: deque[tuple[str, int]] = deque([(first, 0)])
        seen = {first}
        report = CrawlReport()
        fetched = 0
        while queue and fetched < budget:
            url, level = queue.popleft()
            try:
                if len(url) > 1000:
                    raise AppError("The URL is longer than 1000 characters.", code="invalid_url")
                if self.settings.respect_robots:
                    await robots.check(url)
                fetched += 1
                page, parsed = await self._fetch(url, render)
                report.pages.append({"url": url, **await on_page(url, parsed)})
                if level < depth and page.is_html:
                    links = await anyio.to_thread.run_sync(html_links, page.body, page.final_url)
                    for link in links:
                        if link not in seen and _site(link) == site:
                            seen.add(link)
                            queue.append((link, level + 1))
            except AppError as exc:
                report.skipped.append({"url": url, "code": exc.code, "message": exc.message})
            if progress is not None:
                await progress(fetched, budget)
        return report

    async def _fetch(self, url: str, render: RenderMode) -> tuple[Page, ParsedDocument]:
        if render == "browser":
            page = await self._renderer().render(url)
            return page, await anyio.to_thread.run_sync(parse_page, page)
        page = await self.fetcher.get(url)
        parsed = await anyio.to_thread.run_sync(parse_page, page)
        if (render == "auto" and self.renderer is not None and page.is_html
                and len(parsed.text) < self.settings.auto_render_min_chars and b"<script" in page.body.lower()):
            rendered = await self.renderer.render(url)
            parsed_rendered = await anyio.to_thread.run_sync(parse_page, rendered)
            if len(parsed_rendered.text) > len(parsed.text):
                return rendered, parsed_rendered
        return page, parsed

    def _renderer(self) -> Renderer:
        if self.renderer is None:
            raise AppError("Rendering in a browser is not available here (install the 'browser' extra and "
                           "chromium).", code="browser_unavailable")
        return self.renderer


def _site(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, (parts.hostname or "").lower(), port
