"""Turn uploaded bytes into text and a title guess: plain text and Markdown here, HTML, PDF, DOCX and CSV
through ``atrium.knowledge.formats`` (each as Markdown the heading-aware chunker understands).

The type comes from the file name's suffix and must agree with the content (a PDF starts with ``%PDF-``,
a DOCX is a zip holding ``word/document.xml``, text formats are UTF-8 without binary bytes). Errors are
``InvalidRequest`` with a code a client can act on: ``unsupported_file_type`` (the suffix), ``unreadable_file``
(damaged, encrypted, binary or not what the suffix says), or ``PayloadTooLarge`` (too much extracted text,
too many pages or rows).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePath

from atrium.errors import InvalidRequest, PayloadTooLarge
from atrium.knowledge import formats

MARKDOWN_SUFFIXES = frozenset({".md", ".markdown"})
TEXT_SUFFIXES = frozenset({".txt", ".text"})
HTML_SUFFIXES = frozenset({".html", ".htm"})
CSV_SUFFIXES = frozenset({".csv", ".tsv"})
SUPPORTED_SUFFIXES = frozenset({*TEXT_SUFFIXES, *MARKDOWN_SUFFIXES, *HTML_SUFFIXES, *CSV_SUFFIXES, ".pdf", ".docx"})
UNSUPPORTED = "unsupported_file_type"
_TYPES = {"pdf": frozenset({".pdf"}), "docx": frozenset({".docx"}), "md": MARKDOWN_SUFFIXES, "txt": TEXT_SUFFIXES,
          "html": HTML_SUFFIXES, "csv": CSV_SUFFIXES}
FILE_TYPES = tuple(_TYPES)
# The most text one file may yield (a small PDF or zip can hold far more text than its size suggests).
MAX_TEXT_CHARS = 20_000_000

# Control characters other than tab, newline, carriage return and form feed.
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
_MAX_CONTROL_RATIO = 0.01
_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    """A decoded document: its full text (newlines normalised to ``\\n``) and a title guess."""

    text: str
    title: str
    is_markdown: bool
    file_type: str = ""  # pdf, html, md, txt, docx, csv (``file_type``)
    paged: bool = False  # a PDF: its top-level headings are ``Page N``



def is_supported(filename: str) -> bool:
    """Whether ``filename`` has a suffix this module can parse."""
    return PurePath(filename).suffix.lower() in SUPPORTED_SUFFIXES


def unsupported(filename: str) -> InvalidRequest:
    suffix = PurePath(filename).suffix.lower()
    supported = ", ".join(sorted(SUPPORTED_SUFFIXES))
    return InvalidRequest(f"{filename}: unsupported file type {suffix or '(none)'!r}; supported: {supported}.",
                          code=UNSUPPORTED)


def parse_document(filename: str, data: bytes) -> ParsedDocument:
    """Parse ``data`` (the bytes of ``filename``) by its suffix and guess a title.

    Raises ``InvalidRequest`` (``unsupported_file_type``, ``unreadable_file``) or ``PayloadTooLarge``.
    """
    suffix = PurePath(filename).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise unsupported(filename)
    if suffix not in (".pdf", ".docx") and data.startswith((b"%PDF-", b"PK\x03\x04")):
        kind = "a PDF" if data.startswith(b"%PDF-") else "a zip archive"
        raise formats.unreadable(f"{filename} is {kind}, not {suffix} text; name it by its type.")
    if suffix in TEXT_SUFFIXES or suffix in MARKDOWN_SUFFIXES:
        text = decode_text(data)
        is_markdown = suffix in MARKDOWN_SUFFIXES
        title = (markdown_title(text) if is_markdown else None) or _filename_title(filename)
        return ParsedDocument(text=text, title=title, is_markdown=is_markdown, file_type=file_type(filename))
    extracted = _extract(suffix, data)
    if len(extracted.text) > MAX_TEXT_CHARS:
        raise PayloadTooLarge(f"{filename} holds more than {MAX_TEXT_CHARS} characters of text.")
    title = extracted.title or markdown_title(extracted.text) or _filename_title(filename)
    if suffix == ".pdf" and title.startswith("Page ") and not extracted.title:
        title = _filename_title(filename)
    return ParsedDocument(text=extracted.text, title=title, is_markdown=True, file_type=file_type(filename),
                          paged=suffix == ".pdf")


def file_type(filename: str) -> str:
    """The document type a file's suffix names (what the ``type`` search filter matches), or ``""``."""
    suffix = PurePath(filename).suffix.lower()
    for name, suffixes in _TYPES.items():
        if suffix in suffixes:
            return name
    return ""


def _extract(suffix: str, data: bytes) -> formats.Extracted:
    if suffix == ".pdf":
        return formats.parse_pdf(data)
    if suffix == ".docx":
        return formats.parse_docx(data)
    text = decode_text(data)
    if suffix in HTML_SUFFIXES:
        return formats.parse_html(text)
    return formats.parse_csv(text, "\t" if suffix == ".tsv" else None)


def decode_text(data: bytes) -> str:
    """Decode UTF-8 bytes (an optional BOM is dropped) and normalise newlines; refuse binary input."""
    if b"\x00" in data:
        raise formats.unreadable("The file looks binary (it contains NUL bytes); upload UTF-8 text.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise formats.unreadable(
            f"The file is not valid UTF-8 text (bad byte at offset {exc.start}); upload UTF-8 text."
        ) from exc
    if text and len(_CONTROL_CHARS.findall(text)) > _MAX_CONTROL_RATIO * len(text):
        raise formats.unreadable("The file looks binary (too many control characters); upload UTF-8 text.")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def markdown_title(text: str) -> str | None:
    """The text of the first ATX heading outside fenced code blocks, if any."""
    for line, in_code in markdown_lines(text):
        heading = None if in_code else atx_heading(line)
        if heading is not None:
            return heading[1]
    return None


def markdown_lines(text: str) -> Iterator[tuple[str, bool]]:
    """Yield each line of ``text`` with whether it belongs to a fenced code block (fence lines included).

    Follows CommonMark: a fence is 3+ backticks or tildes indented at most 3 spaces, closed by a line of the
    same character at least as long; an unclosed fence runs to the end of the document.
    """
    fence: str | None = None
    for line in text.split("\n"):
        match = _FENCE.match(line)
        if fence is None:
            if match:
                fence = match.group(1)
                yield line, True
            else:
                yield line, False
            continue
        if match and match.group(1)[0] == fence[0] and len(match.group(1)) >= len(fence) \
                and not line.strip().strip(fence[0]):
            fence = None
        yield line, True


def atx_heading(line: str) -> tuple[int, str] | None:
    """``(level, text)`` when ``line`` is a non-empty ATX heading (``## Install``), else ``None``."""
    match = _ATX_HEADING.match(line)
    if match is None or not (match.group(2) or "").strip():
        return None
    return len(match.group(1)), match.group(2).strip()


def _filename_title(filename: str) -> str:
    stem = PurePath(filename).stem.strip()
    return stem or "Untitled"
