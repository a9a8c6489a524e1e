"""Decoding uploads and guessing titles."""

from __future__ import annotations

import pytest

from atrium.errors import InvalidRequest
from atrium.knowledge.parsing import (
    SUPPORTED_SUFFIXES,
    atx_heading,
    is_supported,
    markdown_lines,
    parse_document,
)


def test_markdown_title_is_the_first_heading_outside_code() -> None:
    data = b"```sh\n# not the title\n```\n\nSome text.\n\n## Real Title ##\n\n# Later\n"
    parsed = parse_document("notes.md", data)
    assert parsed.title == "Real Title"
    assert parsed.is_markdown
    assert parsed.text == data.decode()


def test_title_falls_back_to_the_file_name() -> None:
    assert parse_document("release-notes.md", b"no headings here").title == "release-notes"
    # A text file's '#' lines are not headings.
    parsed = parse_document("readme.txt", b"# looks like a heading\nbody")
    assert parsed.title == "readme"
    assert not parsed.is_markdown


def test_bom_and_newlines_are_normalised() -> None:
    parsed = parse_document("a.txt", "\ufeffline one\r\nline two\rline three".encode())
    assert parsed.text == "line one\nline two\nline three"


def test_empty_file() -> None:
    parsed = parse_document("empty.md", b"")
    assert parsed.text == ""
    assert parsed.title == "empty"


def test_unicode_text_is_kept() -> None:
    parsed = parse_document("intl.md", "# Café ünïcode 東京\n\nrésumé".encode())
    assert parsed.title == "Café ünïcode 東京"
    assert "résumé" in parsed.text


@pytest.mark.parametrize("data", [
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",  # NUL bytes
    "caf\xe9 au lait".encode("latin-1"),  # not UTF-8
    b"\xff\xfe\xfd",
    bytes(range(1, 32)) * 20,  # control characters, no NUL
])
def test_binary_or_undecodable_input_is_refused(data: bytes) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_document("upload.txt", data)
    assert "UTF-8" in caught.value.message and caught.value.code == "unreadable_file"


def test_unsupported_suffix_is_refused() -> None:
    with pytest.raises(InvalidRequest, match=r"unsupported file type '\.pptx'") as caught:
        parse_document("slides.pptx", b"PK\x03\x04")
    assert caught.value.code == "unsupported_file_type"
    with pytest.raises(InvalidRequest):
        parse_document("no_suffix", b"text")


def test_supported_suffixes() -> None:
    assert {".txt", ".md"} <= SUPPORTED_SUFFIXES
    assert is_supported("Guide.MD") and is_supported("a/b/notes.txt") and is_supported("x.markdown")
    assert not is_supported("image.png") and not is_supported("README")


@pytest.mark.parametrize(("line", "expected"), [
    ("# Title", (1, "Title")),
    ("###### Six", (6, "Six")),
    ("## Closing hashes ##", (2, "Closing hashes")),
    ("   # Indented three", (1, "Indented three")),
    ("# C#", (1, "C#")),
    ("#hashtag", None),
    ("####### seven", None),
    ("    # four spaces is code", None),
    ("#", None),
    ("plain", None),
])
def test_atx_heading(line: str, expected: tuple[int, str] | None) -> None:
    assert atx_heading(line) == expected


def test_markdown_lines_track_fences() -> None:
    text = "a\n```\n# in\n~~~\nstill in\n```\nb\n~~~~\n```\n~~~~\nc"
    assert [in_code for _, in_code in markdown_lines(text)] == [
        False, True, True, True, True, True, False, True, True, True, False,
    ]
