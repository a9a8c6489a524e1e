"""Fetch one URL through the egress-guarded client, bounded in bytes and time, and turn the response into a
parsed document by its content type (HTML, PDF, DOCX, CSV, Markdown, plain text: the upload parsers).

Errors are typed for the caller: ``fetch_failed`` (no connection, an error status, a timeout, too many
redirects), ``too_large`` (more than ``max_bytes``), ``url_not_allowed`` (the egress guard, on any hop),
``unsupported_file_type`` / ``unreadable_file`` (the parsers). Messages never hold a resolved address.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urldefrag, urljoin, urlsplit

import anyio
import httpx

from atrium.errors import PayloadTooLarge
from atrium.guard.egress import FetchFailed
from atrium.knowledge.parsing import ParsedDocument, is_supported, parse_document, unsupported
from atrium.knowledge.web.settings import WebSettings

TOO_LARGE = "too_large"
ACCEPT = ("text/html,application/xhtml+xml,text/markdown,text/plain,application/pdf,text/csv,"
          "application/vnd.openxmlformats-officedocument.wordprocessingml.document;q=0.9,*/*;q=0.1")
_BY_TYPE = {
    "text/html": ".html", "application/xhtml+xml": ".html", "application/pdf": ".pdf",
    "text/plain": ".txt", "text/markdown": ".md", "text/x-markdown": ".md", "text/csv": ".csv",
    "text/tab-separated-values": ".tsv",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
}
_GENERIC = frozenset({"", "application/octet-stream", "binary/octet-stream"})
_CHARSET = re.compile(r"charset\s*=\s*\"?([\w.:-]+)", re.IGNORECASE)


class TooLarge(PayloadTooLarge):
    code = TOO_LARGE


@dataclass(frozen=True, slots=True)
class Page:
    """A fetched response: the URL asked for, the URL answered (after redirects), status, type, body."""

    url: str
    final_url: str
    status: int
    content_type: str
    body: bytes

    @property
    def media_type(self) -> str:
        return self.content_type.split(";", 1)[0].strip().lower()

    @property
    def is_html(self) -> bool:
        return suffix_of(self) == ".html"


class PageFetcher:
    """GETs URLs over ``client`` (a client from ``atrium.guard.egress_transport.guarded_client``)."""

    def __init__(self, client: httpx.AsyncClient, settings: WebSettings) -> None:
        self.client = client
        self.settings = settings

    async def get(self, url: str, *, max_bytes: int | None = None, accept: str = ACCEPT,
                  ok_only: bool = True) -> Page:
        """The response to ``GET url``: ``FetchFailed`` for an error status (unless ``ok_only`` is off), a
        network error or ``timeout_s`` passing; ``TooLarge`` past ``max_bytes`` (the settings' by default)."""
        limit = max_bytes or self.settings.max_bytes
        host = urlsplit(url).hostname or url
        try:
            with anyio.fail_after(self.settings.timeout_s):
                async with self.client.stream("GET", url, headers={"Accept": accept}) as response:
                    if ok_only and response.status_code >= 400:
                        raise FetchFailed(f"{url} answered HTTP {response.status_code}.")
                    declared = response.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > limit:
                        raise TooLarge(f"{url} is larger than {limit} bytes.")
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in response.aiter_bytes():  # decoded: the bound holds for gzip too
                        size += len(chunk)
                        if size > limit:
                            raise TooLarge(f"{url} is larger than {limit} bytes.")
                        chunks.append(chunk)
                    return Page(url, str(response.url), response.status_code,
                                response.headers.get("content-type", ""), b"".join(chunks))
        except TimeoutError as exc:
            raise FetchFailed(f"{url} did not answer within {self.settings.timeout_s:g} s.") from exc
        except httpx.TooManyRedirects as exc:
            raise FetchFailed(f"{url} redirects more than {self.settings.max_redirects} times.") from exc
        except httpx.HTTPError as exc:  # the message may name an address: only the kind is shown
            raise FetchFailed(f"{host} could not be fetched ({type(exc).__name__}).") from exc


def suffix_of(page: Page) -> str | None:
    """The parser suffix for a response: its content type, else (for a generic type) its URL's suffix."""
    media = page.media_type
    if media in _BY_TYPE:
        return _BY_TYPE[media]
    if media in _GENERIC or media.startswith("text/"):
        name = PurePosixPath(urlsplit(page.final_url).path).name
        if is_supported(name):
            return PurePosixPath(name).suffix.lower()
        if media.startswith("text/"):
            return ".txt"
    return None


def parse_page(page: Page) -> ParsedDocument:
    """The page as a document (``unsupported_file_type`` for a type no parser reads)."""
    suffix = suffix_of(page)
    path = PurePosixPath(urlsplit(page.final_url).path)
    stem = path.stem or urlsplit(page.final_url).hostname or "page"
    if suffix is None:
        raise unsupported(f"{page.url} ({page.media_type or 'no content type'})")
    body = page.body
    if suffix not in (".pdf", ".docx"):
        body = _utf8(body, page.content_type)
    return parse_document(stem + suffix, body)


def _utf8(body: bytes, content_type: str) -> bytes:
    match = _CHARSET.search(content_type)
    charset = match.group(1).lower() if match else None
    if charset is None or charset.replace("-", "") in ("utf8", "usascii", "ascii"):
        return body
    try:
        return body.decode(charset, errors="replace").encode()
    except LookupError:
        return body


def html_links(html: bytes, base_url: str) -> list[str]:
    """Absolute http(s) URLs of the page's ``<a href>`` links (``<base href>`` honoured), fragments dropped."""
    import lxml.html
    from lxml import etree

    try:
        root = lxml.html.document_fromstring(html)
    except (etree.ParserError, ValueError):
        return []
    base = root.find(".//base")
    if base is not None and base.get("href"):
        base_url = urljoin(base_url, base.get("href"))
    found: list[str] = []
    for anchor in root.iter("a"):
        href = (anchor.get("href") or "").strip()
        if not href:
            continue
        url = normalise(urljoin(base_url, href))
        if url is not None and url not in found:
            found.append(url)
    return found


def normalise(url: str) -> str | None:
    """``url`` without its fragment when it is an http(s) URL with a host, else ``None``."""
    url = urldefrag(url)[0]
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return url if parts.path else url + "/"
