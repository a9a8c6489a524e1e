"""Fetching and crawling a real local site through the guarded client: content types into the parsers,
robots.txt, depth and page limits, size and time limits, refusals on redirects, with the default egress
settings (loopback refused) and with the allow-list on."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest

from atrium.guard.egress import EgressGuard, EgressSettings
from atrium.guard.egress_transport import guarded_client
from atrium.knowledge.parsing import ParsedDocument
from atrium.knowledge.web.crawl import Crawler, CrawlReport
from atrium.knowledge.web.fetch import PageFetcher, html_links
from atrium.knowledge.web.settings import WebSettings
from tests.web_site import Site, serve_site

LOCAL = EgressSettings(allow_private=True)


def page(title: str, body: str, links: tuple[str, ...] = ()) -> str:
    anchors = "".join(f'<a href="{href}">{href}</a> ' for href in links)
    return (f"<html><head><title>{title}</title></head><body><nav>Menu Home About</nav>"
            f"<main><h1>{title}</h1><p>{body}</p><p>{anchors}</p></main><footer>Copyright</footer></body></html>")


@pytest.fixture
def site() -> Iterator[Site]:
    with serve_site() as served:
        served.page("/", page("Home", "Welcome to the lighthouse keepers' guild.", ("/a", "/b#part",
                                                                                     "http://elsewhere.test/x")))
        served.page("/a", page("Page A", "Lamps are trimmed at dusk.", ("/a/deeper",)))
        served.page("/b", page("Page B", "Fog horns sound every thirty seconds.", ("/private/secret",)))
        served.page("/a/deeper", page("Deeper", "The deepest page of the guild."))
        served.page("/private/secret", page("Secret", "Nobody should index this."))
        served.page("/robots.txt", "User-agent: *\nDisallow: /private/\n", "text/plain")
        served.page("/notes.md", "# Notes\n\nMarkdown notes about tides.\n", "text/markdown")
        served.page("/plain", "Plain text about buoys.", "text/plain; charset=iso-8859-1")
        served.page("/blob", b"\x00\x01binary", "application/octet-stream")
        yield served


async def crawl(site: Site, path: str = "/", *, egress: EgressSettings = LOCAL, settings: WebSettings | None = None,
                **options: Any) -> tuple[CrawlReport, dict[str, ParsedDocument]]:
    settings = settings or WebSettings()
    stored: dict[str, ParsedDocument] = {}

    async def on_page(url: str, parsed: ParsedDocument) -> dict[str, Any]:
        stored[url] = parsed
        return {"status": "created"}

    async with guarded_client(EgressGuard(egress), timeout=settings.timeout_s) as client:
        report = await Crawler(PageFetcher(client, settings), settings).crawl(site.base + path, on_page, **options)
    return report, stored


async def test_one_page_by_default_with_readable_text(site: Site) -> None:
    report, stored = await crawl(site)
    assert [p["url"] for p in report.pages] == [site.base + "/"]
    doc = stored[site.base + "/"]
    assert doc.title == "Home" and "lighthouse keepers" in doc.text
    assert "Menu" not in doc.text and "Copyright" not in doc.text  # navigation and footer removed


async def test_depth_follows_same_site_links_only_and_stops_at_the_depth(site: Site) -> None:
    _, stored = await crawl(site, depth=1)
    assert set(stored) == {site.base + "/", site.base + "/a", site.base + "/b"}  # not /a/deeper (depth 2)
    assert not any("elsewhere" in url for url in stored)
    _, stored = await crawl(site, depth=2)
    assert site.base + "/a/deeper" in stored


async def test_robots_txt_is_honoured(site: Site) -> None:
    report, stored = await crawl(site, depth=2)
    assert site.base + "/private/secret" not in stored
    assert {"url": site.base + "/private/secret", "code": "robots_disallowed"}.items() <= report.skipped[0].items()
    assert "/private/secret" not in site.paths()  # never requested
    _, stored = await crawl(site, "/private/secret", settings=WebSettings(respect_robots=False))
    assert site.base + "/private/secret" in stored  # only when told not to care


async def test_robots_groups_name_our_agent(site: Site) -> None:
    site.page("/robots.txt", "User-agent: AtriumBot\nDisallow: /\n\nUser-agent: *\nAllow: /\n", "text/plain")
    report, stored = await crawl(site)
    assert stored == {} and report.skipped[0]["code"] == "robots_disallowed"


async def test_max_pages_bounds_the_fetches(site: Site) -> None:
    report, stored = await crawl(site, depth=3, max_pages=2)
    assert len(stored) == 2 and len(report.pages) == 2


async def test_content_types_go_to_their_parsers(site: Site) -> None:
    _, md = await crawl(site, "/notes.md")
    assert next(iter(md.values())).title == "Notes"
    _, plain = await crawl(site, "/plain")
    assert "buoys" in next(iter(plain.values())).text
    report, stored = await crawl(site, "/blob")
    assert stored == {} and report.skipped[0]["code"] == "unsupported_file_type"


async def test_a_huge_body_is_too_large(site: Site) -> None:
    report, _ = await crawl(site, "/huge", settings=WebSettings(max_bytes=1_000_000))
    assert report.skipped[0]["code"] == "too_large"


async def test_a_slow_body_times_out(site: Site) -> None:
    report, _ = await crawl(site, "/slow", settings=WebSettings(timeout_s=1.5))
    assert report.skipped[0]["code"] == "fetch_failed" and "1.5 s" in report.skipped[0]["message"]


async def test_error_statuses_fail_the_page(site: Site) -> None:
    report, _ = await crawl(site, "/missing")
    assert report.skipped[0]["code"] == "fetch_failed" and "404" in report.skipped[0]["message"]


async def test_default_egress_refuses_the_local_site(site: Site) -> None:
    report, stored = await crawl(site, egress=EgressSettings())
    assert stored == {} and report.skipped[0]["code"] == "url_not_allowed"
    assert site.requests == []  # not even robots.txt was fetched


@pytest.mark.parametrize("target", ["http://169.254.169.254/latest/meta-data/", "http://[::1]:{port}/",
                                    "http://0.0.0.0:{port}/"])
async def test_a_page_redirecting_inward_is_refused(site: Site, target: str) -> None:
    site.redirect("/go", target.format(port=site.port))
    only_the_site = EgressSettings(allow_cidrs=[ipaddress.ip_network("127.0.0.1/32")])
    report, stored = await crawl(site, "/go", egress=only_the_site)
    assert stored == {} and report.skipped[0]["code"] == "url_not_allowed", report.skipped
    assert "169.254" not in report.skipped[0]["message"] or "169.254" in target


async def test_a_robots_txt_redirecting_inward_disallows_the_site(site: Site) -> None:
    site.redirect("/robots.txt", "http://169.254.169.254/robots.txt")
    only_the_site = EgressSettings(allow_cidrs=[ipaddress.ip_network("127.0.0.1/32")])
    guard = EgressGuard(only_the_site)
    settings = WebSettings()

    async def on_page(url: str, parsed: ParsedDocument) -> dict[str, Any]:
        return {}

    async with guarded_client(guard) as client:
        report = await Crawler(PageFetcher(client, settings), settings, guard=guard).crawl(site.base + "/", on_page)
    assert report.pages == [] and report.skipped[0]["code"] == "robots_disallowed", report.skipped
    assert site.paths() == ["/robots.txt"]


def test_links_resolve_against_base_and_drop_fragments() -> None:
    html = b'<html><head><base href="/docs/"></head><body><a href="x#y">x</a><a href="mailto:a@b">m</a></body></html>'
    assert html_links(html, "http://site.test/index.html") == ["http://site.test/docs/x"]
