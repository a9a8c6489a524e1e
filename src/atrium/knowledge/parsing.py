"""Turn uploaded plain-text and Markdown bytes into text and a title guess.

Only UTF-8 text is accepted: binary or undecodable input is refused with ``InvalidRequest`` rather than
indexed as garbage.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import PurePath

from atrium.errors import InvalidRequest

MARKDOWN_SUFFIXES = frozenset({".md", ".markdown"})
SUPPORTED_SUFFIXES = frozenset({".txt", ".text", *MARKDOWN_SUFFIXES})

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


def is_supported(filename: str) -> bool:
    """Whether ``filename`` has a suffix this module can parse."""
    return PurePath(filename).suffix.lower() in SUPPORTED_SUFFIXES


def parse_document(filename: str, data: bytes) -> ParsedDocument:
    """Decode ``data`` (the bytes of ``filename``) as UTF-8 text and guess a title.

    Raises ``InvalidRequest`` for an unsupported suffix, binary content or bytes that are not UTF-8.
    """
    suffix = PurePath(filename).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        supported = ", ".join(sorted(SUPPORTED_SUFFIXES))
        raise InvalidRequest(f"Unsupported file type {suffix or '(none)'!r}; supported: {supported}.")
    text = decode_text(data)
    is_markdown = suffix in MARKDOWN_SUFFIXES
    title = (markdown_title(text) if is_markdown else None) or _filename_title(filename)
    return ParsedDocument(text=text, title=title, is_markdown=is_markdown)


def decode_text(data: bytes) -> str:
    """Decode UTF-8 bytes (an optional BOM is dropped) and normalise newlines; refuse binary input."""
    if b"\x00" in data:
        raise InvalidRequest("The file looks binary (it contains NUL bytes); upload UTF-8 text.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidRequest(
            f"The file is not valid UTF-8 text (bad byte at offset {exc.start}); upload UTF-8 text."
        ) from exc
    if text and len(_CONTROL_CHARS.findall(text)) > _MAX_CONTROL_RATIO * len(text):
        raise InvalidRequest("The file looks binary (too many control characters); upload UTF-8 text.")
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
