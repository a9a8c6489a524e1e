"""Parsers for the structured formats (HTML, PDF, DOCX, CSV): each turns bytes into Markdown text that the
heading-aware chunker understands, plus a title if the file names one.

Headings the format marks (HTML ``h1``..``h6``, DOCX ``Heading N`` styles, one ``Page N`` heading per PDF
page) become ATX headings, so a chunk's heading path says where it came from (``Page 3`` for a PDF). Any
body line that would read as a heading or a code fence is escaped with a backslash, so the document's own
text never changes the structure. A file the library cannot read raises ``InvalidRequest`` with the code
``unreadable_file``.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

from atrium.errors import InvalidRequest, PayloadTooLarge

UNREADABLE = "unreadable_file"
MAX_PDF_PAGES = 2000
MAX_CSV_ROWS = 100_000
MAX_CSV_CELL_CHARS = 1000
# A DOCX is a zip: its members may not unpack to more than this many times the upload's size.
MAX_UNZIP_RATIO = 50

_LOOKS_STRUCTURAL = re.compile(r"^ {0,3}(#|`{3}|~{3})")
_SPACES = re.compile(r"\s+")
_HTML_DROP = frozenset({"script", "style", "nav", "header", "footer", "aside", "noscript", "template", "form",
                        "svg", "iframe", "button", "select", "head"})
_HTML_BLOCKS = frozenset({"p", "div", "section", "article", "main", "li", "ul", "ol", "dl", "dt", "dd", "table",
                          "tr", "blockquote", "figure", "figcaption", "br", "hr", "td", "th", "body", "html"})
_DOCX_HEADING = re.compile(r"^heading\s*([1-6])$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Extracted:
    """Markdown text and the title the file itself names (empty when none)."""

    text: str
    title: str = ""


def unreadable(message: str) -> InvalidRequest:
    return InvalidRequest(message, code=UNREADABLE)


def safe_line(line: str) -> str:
    """``line`` with a backslash in front when it would otherwise read as a Markdown heading or fence."""
    return "\\" + line.lstrip() if _LOOKS_STRUCTURAL.match(line) else line


def safe_text(text: str) -> str:
    return "\n".join(safe_line(line) for line in text.split("\n"))


def heading(level: int, text: str) -> str:
    return f"{'#' * level} {_SPACES.sub(' ', text).strip()}"


def parse_pdf(data: bytes) -> Extracted:
    """Text per page, each page under a ``# Page N`` heading; pages with no text are skipped."""
    from pypdf import PdfReader  # imported here: only uploads of PDFs pay for it

    if b"%PDF-" not in data[:1024]:
        raise unreadable("The file is not a PDF (no %PDF- header).")
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise unreadable("The PDF is encrypted; upload it without a password.")
        if len(reader.pages) > MAX_PDF_PAGES:
            raise PayloadTooLarge(f"The PDF has more than {MAX_PDF_PAGES} pages.")
        parts: list[str] = []
        for number, page in enumerate(reader.pages, start=1):
            text = (page.extract_text() or "").replace("\r\n", "\n").replace("\r", "\n").strip()
            if text:
                parts.append(f"# Page {number}\n\n{safe_text(text)}")
        title = str(reader.metadata.title or "").strip() if reader.metadata is not None else ""
    except InvalidRequest:
        raise
    except Exception as exc:  # pypdf raises many kinds on a damaged file; all mean the same to the caller
        raise unreadable(f"The PDF could not be read ({type(exc).__name__}).") from exc
    return Extracted("\n\n".join(parts), title[:300])


def parse_docx(data: bytes) -> Extracted:
    """Paragraphs in order (``Heading N`` and ``Title`` styles as headings), then each table's rows."""
    from docx import Document as open_docx

    _check_zip(data)
    try:
        document = open_docx(io.BytesIO(data))
        lines: list[str] = []
        for paragraph in document.paragraphs:
            text = paragraph.text.strip()
            if not text:
                continue
            style = (paragraph.style.name if paragraph.style is not None else "") or ""
            match = _DOCX_HEADING.match(style.strip())
            if match or style == "Title":
                lines.append(heading(int(match.group(1)) if match else 1, text))
            else:
                lines.append(safe_text(text))
        for table in document.tables:
            for row in table.rows:
                cells = [_SPACES.sub(" ", cell.text).strip() for cell in row.cells]
                if any(cells):
                    lines.append(safe_line(" | ".join(cells)))
        title = (document.core_properties.title or "").strip()
    except Exception as exc:  # a zip that is not a Word document, or a damaged one
        raise unreadable(f"The DOCX could not be read ({type(exc).__name__}).") from exc
    return Extracted("\n\n".join(lines), title[:300])


def _check_zip(data: bytes) -> None:
    if not data.startswith(b"PK\x03\x04"):
        raise unreadable("The file is not a DOCX (not a zip archive).")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
            names = {member.filename for member in members}
            unpacked = sum(member.file_size for member in members)
    except zipfile.BadZipFile as exc:
        raise unreadable("The DOCX is not a readable zip archive.") from exc
    if "word/document.xml" not in names:
        raise unreadable("The zip archive is not a Word document (no word/document.xml).")
    if unpacked > MAX_UNZIP_RATIO * max(len(data), 1_000_000):
        raise unreadable("The DOCX unpacks to too much data.")


def parse_html(text: str) -> Extracted:
    """The visible text of the page without navigation, header, footer, scripts and styles; ``h1``..``h6``
    become headings, block elements paragraphs, ``pre`` keeps its lines."""
    import lxml.html
    from lxml import etree

    try:
        root = lxml.html.document_fromstring(text) if text.strip() else None
    except (etree.ParserError, ValueError) as exc:
        raise unreadable(f"The HTML could not be parsed ({type(exc).__name__}).") from exc
    if root is None:
        return Extracted("")
    title_element = root.find(".//title")
    title = _SPACES.sub(" ", title_element.text_content()).strip() if title_element is not None else ""
    blocks: list[str] = []
    _HtmlWalker(blocks).walk(root)
    return Extracted("\n\n".join(blocks), title[:300])


class _HtmlWalker:
    """Collects the blocks of an HTML tree: inline text is gathered into the current paragraph."""

    def __init__(self, blocks: list[str]) -> None:
        self.blocks = blocks
        self.inline: list[str] = []

    def flush(self) -> None:
        paragraph = _SPACES.sub(" ", "".join(self.inline)).strip()
        if paragraph:
            self.blocks.append(safe_line(paragraph))
        self.inline.clear()

    def walk(self, element: object) -> None:
        tag = getattr(element, "tag", None)
        if not isinstance(tag, str):  # comments and processing instructions
            return
        tag = tag.lower()
        if tag in _HTML_DROP:
            return
        text_content = element.text_content  # type: ignore[attr-defined]
        if len(tag) == 2 and tag[0] == "h" and tag[1] in "123456":
            self.flush()
            words = _SPACES.sub(" ", text_content()).strip()
            if words:
                self.blocks.append(heading(int(tag[1]), words))
            return
        if tag == "pre":
            self.flush()
            code = text_content().strip("\n")
            if code.strip():
                self.blocks.append(safe_text(code))
            return
        block = tag in _HTML_BLOCKS
        if block:
            self.flush()
        self.inline.append(element.text or "")  # type: ignore[attr-defined]
        for child in element:  # type: ignore[attr-defined]
            self.walk(child)
            self.inline.append(child.tail or "")
        if block:
            self.flush()
        elif tag in ("td", "th"):
            self.inline.append(" ")


def parse_csv(text: str, delimiter: str | None = None) -> Extracted:
    """Each row as one paragraph of ``column: value`` pairs named by the header row; at most
    ``MAX_CSV_ROWS`` rows, cells cut to ``MAX_CSV_CELL_CHARS`` characters."""
    sample = text[:8192]
    if delimiter is None:
        try:
            delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
        except csv.Error:
            delimiter = ","
    rows = _csv_rows(text, delimiter)
    header = next(rows, None)
    if header is None:
        return Extracted("")
    names = [cell or f"column {i}" for i, cell in enumerate(header, start=1)]
    paragraphs: list[str] = []
    for number, row in enumerate(rows, start=1):
        if number > MAX_CSV_ROWS:
            raise PayloadTooLarge(f"The CSV has more than {MAX_CSV_ROWS} rows.")
        pairs = [f"{names[i] if i < len(names) else f'column {i + 1}'}: {cell}"
                 for i, cell in enumerate(row) if cell]
        if pairs:
            paragraphs.append(safe_line("; ".join(pairs)))
    return Extracted("\n\n".join(paragraphs))


def _csv_rows(text: str, delimiter: str) -> Iterator[list[str]]:
    try:
        for row in csv.reader(io.StringIO(text), delimiter=delimiter):
            yield [_SPACES.sub(" ", cell).strip()[:MAX_CSV_CELL_CHARS] for cell in row]
    except csv.Error as exc:
        raise unreadable(f"The CSV could not be read ({exc}).") from exc
