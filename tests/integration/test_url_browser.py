"""Dynamic pages rendered by Debian's Chromium through Playwright (the ``browser`` extra): the text a script
builds is ingested, and every request the page makes passes the egress guard (a script's request to a
refused address never reaches it)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from atrium.guard.egress import EgressGuard, EgressSettings
from atrium.guard.egress_transport import guarded_client
from atrium.knowledge.parsing import ParsedDocument
from atrium.knowledge.web.browser import BrowserRenderer, browser_missing
from atrium.knowledge.web.crawl import Crawler
from atrium.knowledge.web.fetch import PageFetcher
from atrium.knowledge.web.settings import WebSettings
from tests.web_site import Site, serve_site

MISSING = browser_missing(Path("/usr/bin/chromium"))
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"browser rendering unavailable: {MISSING}")

DYNAMIC = """<html><head><title>Dynamic</title></head><body><div id="out">loading</div><script>
fetch('/data.json').then(r => r.json()).then(d => {
  document.getElementById('out').innerHTML = '<p>' + d.text + '</p>';
  return fetch('%s').then(() => 'reached', () => 'blocked');
}).then(s => { const p = document.createElement('p'); p.textContent = 'inner ' + s;
  document.body.appendChild(p); });
</script></body></html>"""


@pytest.fixture
def sites() -> Iterator[tuple[Site, Site]]:
    with serve_site() as site, serve_site("127.0.0.2") as inner:
        inner.page("/secret", "secret")
        site.page("/", DYNAMIC % f"http://127.0.0.2:{inner.port}/secret")
        site.page("/data.json", '{"text": "Cormorants dive for herring off the breakwater."}', "application/json")
        site.page("/robots.txt", "", "text/plain")
        yield site, inner


async def test_a_scripted_page_is_rendered_and_its_requests_are_guarded(sites: tuple[Site, Site]) -> None:
    site, inner = sites
    settings = WebSettings(browser_timeout_s=30)
    guard = EgressGuard(EgressSettings(allow_cidrs=[ipaddress.ip_network("127.0.0.1/32")]))
    stored: dict[str, ParsedDocument] = {}

    async def on_page(url: str, parsed: ParsedDocument) -> dict[str, Any]:
        stored[url] = parsed
        return {}

    async with guarded_client(guard) as client:
        renderer = BrowserRenderer(client, settings)
        try:
            static = await Crawler(PageFetcher(client, settings), settings).crawl(site.base + "/", on_page,
                                                                                 render="static")
            assert "Cormorants" not in stored[site.base + "/"].text  # the static page has only "loading"
            report = await Crawler(PageFetcher(client, settings), settings, renderer).crawl(
                site.base + "/", on_page, render="browser")
        finally:
            await renderer.aclose()
    assert static.pages and report.pages, report.skipped
    text = stored[site.base + "/"].text
    assert "Cormorants dive for herring" in text and "inner blocked" in text, text
    assert "/data.json" in site.paths()  # the browser's own request, served through the guarded client
    assert inner.requests == []  # the refused address was never contacted


async def test_auto_renders_a_page_with_no_static_text(sites: tuple[Site, Site]) -> None:
    site, _inner = sites
    settings = WebSettings()
    stored: dict[str, ParsedDocument] = {}

    async def on_page(url: str, parsed: ParsedDocument) -> dict[str, Any]:
        stored[url] = parsed
        return {}

    async with guarded_client(EgressGuard(EgressSettings(allow_private=True))) as client:
        renderer = BrowserRenderer(client, settings)
        try:
            await Crawler(PageFetcher(client, settings), settings, renderer).crawl(site.base + "/", on_page)
        finally:
            await renderer.aclose()
    assert "Cormorants" in stored[site.base + "/"].text
