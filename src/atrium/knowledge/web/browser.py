"""Render dynamic pages in Debian's Chromium through Playwright (the optional ``browser`` extra).

Chromium never reaches the network itself: every request it makes is intercepted (``context.route``) and
answered by Atrium's guarded HTTP client, so it is checked by the egress guard, connected to the checked
address, and bounded in size like any fetch. A refused request is aborted. Redirects are handed back to the
browser (its next request is intercepted and checked in turn). Chromium is also started with a host
resolver that resolves nothing, so a request that escaped interception could not find a host, and
WebSockets are closed. One browser process is started on first use and kept until ``aclose``.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import anyio
import httpx

from atrium.errors import AppError
from atrium.guard.egress import UrlNotAllowed
from atrium.knowledge.web.crawl import Renderer
from atrium.knowledge.web.fetch import Page
from atrium.knowledge.web.settings import WebSettings

log = logging.getLogger(__name__)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-quic", "--no-first-run", "--host-resolver-rules=MAP * ~NOTFOUND"]
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-encoding", "content-length"})


def browser_missing(path: Path) -> str | None:
    """Why the browser cannot be used here (``None`` when it can)."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the 'browser' extra (playwright) is not installed"
    if not (path.is_file() or shutil.which(str(path))):
        return f"no Chromium at {path} (apt-get install chromium)"
    return None


class BrowserRenderer(Renderer):
    """Loads a URL in headless Chromium and answers the rendered HTML (``document.documentElement``)."""

    def __init__(self, client: httpx.AsyncClient, settings: WebSettings) -> None:
        self.client = client  # the guarded client: every browser request goes through it
        self.settings = settings
        self._playwright: Any = None
        self._browser: Any = None
        self._lock = anyio.Lock()

    async def _ensure(self) -> Any:
        async with self._lock:
            if self._browser is None:
                from playwright.async_api import async_playwright

                self._playwright = await async_playwright().start()
                self._browser = await self._playwright.chromium.launch(
                    executable_path=str(self.settings.browser_path), args=CHROMIUM_ARGS)
            return self._browser

    async def render(self, url: str) -> Page:
        browser = await self._ensure()
        context = await browser.new_context(user_agent=self.settings.user_agent, service_workers="block",
                                            java_script_enabled=True, accept_downloads=False)
        budget = [self.settings.max_bytes]
        try:
            await context.route("**/*", lambda route: self._answer(route, budget))
            await context.route_web_socket("**/*", lambda ws: ws.close())
            page = await context.new_page()
            try:
                response = await page.goto(url, wait_until="networkidle",
                                           timeout=self.settings.browser_timeout_s * 1000)
            except Exception as exc:  # playwright's TimeoutError and navigation errors
                raise AppError(f"{url} could not be rendered ({type(exc).__name__}).", code="fetch_failed") from exc
            if response is None or response.status >= 400:
                status = response.status if response is not None else "no response"
                raise AppError(f"{url} answered HTTP {status}.", code="fetch_failed")
            html = await page.content()
            return Page(url, page.url, response.status, "text/html; charset=utf-8", html.encode())
        finally:
            await context.close()

    async def _answer(self, route: Any, budget: list[int]) -> None:
        request = route.request
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        try:
            with anyio.fail_after(self.settings.timeout_s):
                async with self.client.stream(request.method, request.url, headers=headers,
                                              content=request.post_data_buffer, follow_redirects=False) as answer:
                    body = bytearray()
                    async for chunk in answer.aiter_bytes():
                        body += chunk
                        if len(body) > budget[0]:
                            raise AppError("the page's resources exceed the size limit", code="too_large")
                    budget[0] -= len(body)
                    reply = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
                    await route.fulfill(status=answer.status_code, headers=reply, body=bytes(body))
        except UrlNotAllowed:
            await route.abort("blockedbyclient")
        except (AppError, httpx.HTTPError, TimeoutError) as exc:
            log.debug("browser request to %s failed: %s", request.url, type(exc).__name__)
            await route.abort("failed")

    async def aclose(self) -> None:
        if self._browser is not None:
            await self._browser.close()
            self._browser = None
        if self._playwright is not None:
            await self._playwright.stop()
            self._playwright = None
